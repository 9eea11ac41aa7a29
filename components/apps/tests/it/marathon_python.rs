//! marathon-python 0.13.0, unmodified, against apps (venv under `target/pyenv-apps`).

use std::path::PathBuf;
use std::process::Command;

use crate::fake_master::FakeMaster;
use crate::support::Apps;

fn venv_python() -> PathBuf {
    let target = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../target");
    let venv = target.join("pyenv-apps");
    let python = venv.join("bin/python");
    let ready = Command::new(&python)
        .args(["-c", "import marathon"])
        .status()
        .is_ok_and(|s| s.success());
    if !ready {
        let ok = Command::new("python3")
            .arg("-m")
            .arg("venv")
            .arg(&venv)
            .status()
            .expect("python3 runs")
            .success();
        assert!(ok, "python3 -m venv failed");
        let ok = Command::new(venv.join("bin/pip"))
            .args(["install", "-q", "marathon==0.13.0"])
            .status()
            .expect("pip runs")
            .success();
        assert!(ok, "pip install marathon==0.13.0 failed");
    }
    python
}

// marathon-python 0.13.0 still uses `collections.Iterable`, which Python 3.10 removed; the
// first lines restore that standard-library alias. The client package itself is unmodified.
const SCRIPT: &str = r#"
import collections, collections.abc
collections.Iterable = collections.abc.Iterable
import os, sys, time, threading
from marathon import MarathonClient
from marathon.models import MarathonApp

c = MarathonClient(os.environ["MARATHON_URL"])

def wait(pred, what, limit=30):
    end = time.time() + limit
    last = None
    while time.time() < end:
        try:
            r = pred()
            if r:
                return r
        except Exception as e:
            last = e
        time.sleep(0.05)
    raise SystemExit("timed out waiting for %s (last error %r)" % (what, last))

def settled(app_id, n):
    def f():
        a = c.get_app(app_id, embed_tasks=True)
        running = [t for t in a.tasks if t.state == "TASK_RUNNING"]
        return a if not a.deployments and len(a.tasks) == n and len(running) == n else None
    return f

events = []
def listen():
    for ev in c.event_stream():
        events.append(ev.event_type)
threading.Thread(target=listen, daemon=True).start()
wait(lambda: "event_stream_attached" in events, "event stream attached")

app = c.create_app("/py/web", MarathonApp(cmd="sleep 1000", cpus=0.1, mem=16, instances=1, labels={"team": "py"}))
assert app.id == "/py/web", app.id
wait(settled("/py/web", 1), "one task")
assert [a.id for a in c.list_apps(embed_tasks=True)] == ["/py/web"]
assert len(c.list_apps(label="team==py")) == 1
c.scale_app("/py/web", instances=3)
wait(settled("/py/web", 3), "scaled to 3")
app = c.get_app("/py/web")
app.mem = 32
c.update_app("/py/web", app)
wait(lambda: c.get_app("/py/web").mem == 32 and settled("/py/web", 3)(), "updated")
c.restart_app("/py/web")
wait(settled("/py/web", 3), "restarted")
tasks = c.list_tasks("/py/web")
assert len(tasks) == 3, tasks
c.kill_task("/py/web", tasks[0].id, scale=True)
wait(settled("/py/web", 2), "killed one with scale")
killed = c.kill_tasks("/py/web")
assert len(killed) == 2
wait(settled("/py/web", 2), "replaced after kill")
assert isinstance(c.list_deployments(), list)
assert c.get_info().name == "marathon"
c.ping()
c.list_queue()
assert len(c.list_versions("/py/web")) >= 4
c.delete_app("/py/web", force=True)
wait(lambda: c.list_apps() == [], "deleted")
wait(lambda: "status_update_event" in events and "deployment_success" in events, "events")
print("OK")
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn marathon_python_drives_create_list_scale_update_restart_kill_delete_and_events() {
    let python = tokio::task::spawn_blocking(venv_python).await.unwrap();
    let master = FakeMaster::start(2).await;
    let apps = Apps::start(&master).await;
    let url = apps.url.clone();
    let out = tokio::task::spawn_blocking(move || {
        Command::new(python)
            .arg("-c")
            .arg(SCRIPT)
            .env("MARATHON_URL", url)
            .output()
            .expect("python runs")
    })
    .await
    .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success() && stdout.contains("OK"),
        "stdout:\n{stdout}\nstderr:\n{stderr}"
    );
}
