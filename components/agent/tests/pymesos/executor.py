"""A pymesos custom executor (unmodified pymesos from PyPI) for the agent's recovery test.

Reports TASK_RUNNING for every task it is given and TASK_KILLED when one is killed; logs
its (re)registrations, so the test sees it subscribe again after an agent restart.
"""
import logging
import sys

from pymesos import Executor, MesosExecutorDriver

logging.basicConfig(level=logging.INFO, stream=sys.stderr)
log = logging.getLogger("recovering-executor")


class RecoveringExecutor(Executor):
    def registered(self, driver, executor_info, framework_info, agent_info):
        log.info("registered with agent %s", agent_info["id"]["value"])

    def reregistered(self, driver, agent_info):
        log.info("reregistered with agent %s", agent_info["id"]["value"])

    def disconnected(self, driver):
        log.info("disconnected from the agent")

    def launchTask(self, driver, task):
        driver.sendStatusUpdate({"task_id": task["task_id"], "state": "TASK_RUNNING"})

    def killTask(self, driver, task_id):
        driver.sendStatusUpdate({"task_id": task_id, "state": "TASK_KILLED"})


if __name__ == "__main__":
    MesosExecutorDriver(RecoveringExecutor(), use_addict=True).run()
