"""A pymesos custom executor (unmodified pymesos from PyPI) run by a Capstan agent.

Runs each task "in" the executor: reports TASK_RUNNING, answers every framework message
with "pong:<message>", and reports TASK_KILLED when the task is killed, then stops.
"""
import logging
import sys
import threading

from pymesos import Executor, MesosExecutorDriver, decode_data, encode_data

logging.basicConfig(level=logging.INFO, stream=sys.stderr)
log = logging.getLogger("test-executor")


class TestExecutor(Executor):
    def registered(self, driver, executor_info, framework_info, agent_info):
        log.info("registered on %s", agent_info["hostname"])

    def launchTask(self, driver, task):
        log.info("launch %s", task["task_id"]["value"])
        driver.sendStatusUpdate({
            "task_id": task["task_id"],
            "state": "TASK_RUNNING",
            "message": "running in the pymesos executor",
            "data": task.get("data", ""),
        })

    def frameworkMessage(self, driver, message):
        reply = b"pong:" + decode_data(message)
        log.info("message %r -> %r", decode_data(message), reply)
        driver.sendFrameworkMessage(encode_data(reply))

    def killTask(self, driver, task_id):
        log.info("kill %s", task_id["value"])
        driver.sendStatusUpdate({"task_id": task_id, "state": "TASK_KILLED"})
        # Let the update reach the agent before going away.
        threading.Timer(1.0, driver.stop).start()


def main():
    driver = MesosExecutorDriver(TestExecutor(), use_addict=True)
    driver.run()


if __name__ == "__main__":
    main()
