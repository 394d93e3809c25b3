"""The OpenEnv protocol's overhead: steps per second of the same environment in process and through
`make_env("openenv", ...)` against `turnrl serve` on localhost (one session, WebSocket).

    python bench/openenv_overhead.py [--env webshop] [--episodes 30]

(Not named openenv.py: run as a script, bench/ comes first on sys.path and would shadow the package.)

Both play the expert's episodes on the same test tasks; the last line printed is a JSON object.
"""

from __future__ import annotations

import argparse
import json
import socket
import subprocess
import sys
import time

import httpx

from turnrl.environments import make_env


def play(env, tasks) -> int:
    steps = 0
    for task in tasks:
        env.reset(task=task, seed=0)
        for _ in range(30):
            steps += 1
            if env.step(env.expert_action()).done:
                break
    return steps


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--env", default="webshop")
    parser.add_argument("--episodes", type=int, default=30)
    args = parser.parse_args()
    local = make_env(args.env)
    tasks = local.tasks("test")[:args.episodes]
    play(local, tasks[:2])
    start = time.perf_counter()
    steps = play(local, tasks)
    in_process = steps / (time.perf_counter() - start)

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    server = subprocess.Popen([sys.executable, "-m", "turnrl.cli", "serve", "--env", args.env, "--port", str(port)],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        url = f"http://127.0.0.1:{port}"
        for _ in range(600):
            try:
                if httpx.get(f"{url}/health", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.1)
        remote = make_env("openenv", base_url=url)
        remote_tasks = remote.tasks("test")[:args.episodes]
        play(remote, remote_tasks[:2])
        start = time.perf_counter()
        remote_steps = play(remote, remote_tasks)
        served = remote_steps / (time.perf_counter() - start)
        remote.close()
    finally:
        server.kill()
        server.wait()
    print(f"{args.env}: {in_process:.0f} steps/s in process, {served:.0f} steps/s through OpenEnv "
          f"({in_process / served:.1f}x)")
    print(json.dumps({"env": args.env, "episodes": args.episodes, "steps": steps,
                      "in_process_steps_per_s": round(in_process, 1), "openenv_steps_per_s": round(served, 1),
                      "overhead_ratio": round(in_process / served, 2)}))


if __name__ == "__main__":
    main()
