"""A pymesos scheduler run by the master's integration tests against a real master.

Launches a short and a long task from the first offer, waits for TASK_RUNNING and
TASK_FINISHED, kills the long task, reconciles and stops. Exits 0 on success.
"""
import logging
import os
import sys
import threading

from pymesos import MesosSchedulerDriver, Scheduler

logging.basicConfig(level=logging.INFO, stream=sys.stderr)
log = logging.getLogger("test-scheduler")

seen = []
lock = threading.Lock()
launched = False
killed = False
reconciled = False
done = threading.Event()


def task(offer, tid, cmd):
    return {
        "name": tid,
        "task_id": {"value": tid},
        "agent_id": {"value": offer["agent_id"]["value"]},
        "resources": [
            {"name": "cpus", "type": "SCALAR", "scalar": {"value": 0.1}},
            {"name": "mem", "type": "SCALAR", "scalar": {"value": 32}},
        ],
        "command": {"value": cmd, "shell": True},
    }


class TestScheduler(Scheduler):
    def registered(self, driver, framework_id, master_info):
        log.info("registered %s %s", framework_id, master_info)
        print("REGISTERED", framework_id["value"], flush=True)

    def resourceOffers(self, driver, offers):
        global launched
        with lock:
            for offer in offers:
                if not launched:
                    launched = True
                    driver.launchTasks(
                        offer["id"], [task(offer, "short", "sleep 0.3"), task(offer, "long", "serve")]
                    )
                else:
                    driver.declineOffer(offer["id"], {"refuse_seconds": 3600})

    def statusUpdate(self, driver, update):
        global killed, reconciled
        tid, state = update["task_id"]["value"], update["state"]
        print("UPDATE", tid, state, update.get("reason", ""), flush=True)
        with lock:
            seen.append((tid, state, update.get("reason")))
            have = set((t, s) for t, s, _ in seen)
            if ("short", "TASK_FINISHED") in have and ("long", "TASK_RUNNING") in have and not killed:
                killed = True
                driver.killTask({"value": "long"})
            if ("long", "TASK_KILLED") in have and not reconciled:
                reconciled = True
                driver.reconcileTasks([{"task_id": {"value": "short"}}])
            if reconciled and any(
                t == "short" and r == "REASON_RECONCILIATION" for t, _, r in seen
            ):
                done.set()

    def error(self, driver, message):
        print("ERROR", message, flush=True)


def main():
    master = sys.argv[1]
    framework = {"user": "root", "name": "pymesos-test", "hostname": "localhost"}
    # A master in strict mode wants HTTP basic authentication (pymesos's own option).
    principal = os.environ.get("MESOS_PRINCIPAL")
    secret = os.environ.get("MESOS_SECRET")
    if principal:
        framework["principal"] = principal
    driver = MesosSchedulerDriver(
        TestScheduler(), framework, master, use_addict=True, principal=principal, secret=secret
    )
    driver.start()
    ok = done.wait(float(os.environ.get("TEST_TIMEOUT", "60")))
    driver.stop()
    driver.join()
    print("RESULT", "OK" if ok else "TIMEOUT", flush=True)
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
