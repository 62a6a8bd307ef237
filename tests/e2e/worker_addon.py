"""Test-only mitmdump script: says which worker process served a response (X-Test-Worker-Pid),
so a test can see that every worker of `webpolicy run --workers N` takes connections."""

import os


class WorkerPid:
    def response(self, flow) -> None:
        flow.response.headers["x-test-worker-pid"] = str(os.getpid())


addons = [WorkerPid()]
