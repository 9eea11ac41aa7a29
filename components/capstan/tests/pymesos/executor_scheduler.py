"""A pymesos scheduler (unmodified pymesos from PyPI) that exercises a real Capstan master
and agent: one task under a pymesos custom executor (launch, framework messages both
ways, kill) and one Docker task of the offline image that runs to completion.

Usage: executor_scheduler.py MASTER_HOST:PORT PYTHON EXECUTOR_SCRIPT
Prints one line per event and `RESULT OK` (exit 0) when everything happened in time.
"""
import logging
import os
import sys
import threading

from pymesos import MesosSchedulerDriver, Scheduler, decode_data, encode_data

logging.basicConfig(level=logging.INFO, stream=sys.stderr)
log = logging.getLogger("test-scheduler")

lock = threading.Lock()
launched = False
seen = set()
pong = threading.Event()
done = threading.Event()


def resources(cpus, mem):
    return [
        {"name": "cpus", "type": "SCALAR", "scalar": {"value": cpus}},
        {"name": "mem", "type": "SCALAR", "scalar": {"value": mem}},
    ]


class TestScheduler(Scheduler):
    def __init__(self, python, executor_script):
        self.executor = {
            "executor_id": {"value": "pyexec"},
            "name": "pymesos test executor",
            "command": {"value": "%s %s" % (python, executor_script), "shell": True},
            "resources": resources(0.1, 64),
        }

    def registered(self, driver, framework_id, master_info):
        print("REGISTERED", framework_id["value"], flush=True)

    def resourceOffers(self, driver, offers):
        global launched
        with lock:
            for offer in offers:
                if launched:
                    driver.declineOffer(offer["id"], {"refuse_seconds": 3600})
                    continue
                launched = True
                agent_id = {"value": offer["agent_id"]["value"]}
                in_executor = {
                    "name": "in-executor",
                    "task_id": {"value": "in-executor"},
                    "agent_id": agent_id,
                    "resources": resources(0.1, 32),
                    "executor": self.executor,
                    "data": encode_data(b"task-data"),
                }
                in_docker = {
                    "name": "in-docker",
                    "task_id": {"value": "in-docker"},
                    "agent_id": agent_id,
                    "resources": resources(0.1, 32),
                    "container": {"type": "DOCKER", "docker": {"image": "capstan/busybox"}},
                    "command": {"value": "echo hello from docker", "shell": True},
                }
                driver.launchTasks(offer["id"], [in_executor, in_docker])

    def statusUpdate(self, driver, update):
        tid, state = update["task_id"]["value"], update["state"]
        print("UPDATE", tid, state, flush=True)
        with lock:
            seen.add((tid, state))
            if (tid, state) == ("in-executor", "TASK_RUNNING"):
                print("DATA", decode_data(update.get("data", "")).decode(), flush=True)
                driver.sendFrameworkMessage(
                    {"value": "pyexec"}, update["agent_id"], encode_data(b"ping")
                )
            if ("in-executor", "TASK_KILLED") in seen and ("in-docker", "TASK_FINISHED") in seen:
                done.set()

    def frameworkMessage(self, driver, executor_id, agent_id, message):
        print("MESSAGE", executor_id["value"], decode_data(message).decode(), flush=True)
        if decode_data(message) == b"pong:ping" and not pong.is_set():
            pong.set()
            driver.killTask({"value": "in-executor"})

    def error(self, driver, message):
        print("ERROR", message, flush=True)


def main():
    master, python, executor_script = sys.argv[1:4]
    framework = {"user": "root", "name": "pymesos-executor-test", "hostname": "localhost"}
    driver = MesosSchedulerDriver(
        TestScheduler(python, executor_script), framework, master, use_addict=True
    )
    driver.start()
    ok = done.wait(float(os.environ.get("TEST_TIMEOUT", "60")))
    driver.stop()
    driver.join()
    print("RESULT", "OK" if ok else "TIMEOUT", flush=True)
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
