//! The peer: Debian's nginx as a plain reverse proxy in front of the benchmark's backend, with
//! a generated config in a temp dir (one worker, keep-alive upstream pool, HTTP/1.1 upstream,
//! plain and TLS listeners on loopback), the same forwarding headers the router sets, and the
//! same certificate as the router.

use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};

use crate::child::pinned;

pub const NGINX: &str = "/usr/sbin/nginx";

/// Ports and files nginx is configured with.
pub struct Setup<'a> {
    pub dir: &'a Path,
    pub http_port: u16,
    pub https_port: u16,
    pub backend: &'a str,
    pub cert: &'a Path,
    pub key: &'a Path,
}

fn is_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("Uid:"))
                .and_then(|v| v.split_whitespace().nth(1).map(|u| u == "0"))
        })
        .unwrap_or(false)
}

/// The config file text.
pub fn config(s: &Setup<'_>, root: bool) -> String {
    let d = s.dir.display();
    // A worker started by root would switch to `nobody`, which cannot read the temp dir.
    let user = if root { "user root root;\n" } else { "" };
    format!(
        "daemon off;\nmaster_process on;\nworker_processes 1;\n{user}pid {d}/nginx.pid;\n\
         error_log {d}/error.log warn;\n\
         events {{\n  worker_connections 8192;\n}}\n\
         http {{\n  access_log off;\n  server_tokens off;\n\
         \x20 client_body_temp_path {d}/client_body;\n  proxy_temp_path {d}/proxy;\n\
         \x20 fastcgi_temp_path {d}/fastcgi;\n  uwsgi_temp_path {d}/uwsgi;\n  scgi_temp_path {d}/scgi;\n\
         \x20 keepalive_requests 1000000;\n  keepalive_timeout 75s;\n\
         \x20 upstream backend {{\n    server {backend};\n    keepalive 64;\n    \
         keepalive_requests 1000000;\n  }}\n\
         \x20 server {{\n    listen 127.0.0.1:{http};\n    listen 127.0.0.1:{https} ssl;\n\
         \x20   ssl_certificate {cert};\n    ssl_certificate_key {key};\n\
         \x20   ssl_protocols TLSv1.2 TLSv1.3;\n    ssl_session_cache off;\n    ssl_session_tickets off;\n\
         \x20   location /mesos_dns/ {{\n      proxy_pass http://backend/;\n\
         \x20     proxy_http_version 1.1;\n      proxy_set_header Connection \"\";\n\
         \x20     proxy_set_header Host $host;\n      proxy_set_header X-Real-IP $remote_addr;\n\
         \x20     proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;\n\
         \x20     proxy_set_header X-Forwarded-Proto $scheme;\n\
         \x20     proxy_set_header Authorization \"\";\n    }}\n    location / {{\n      return 404;\n    }}\n  }}\n}}\n",
        backend = s.backend,
        http = s.http_port,
        https = s.https_port,
        cert = s.cert.display(),
        key = s.key.display(),
    )
}

/// A running nginx. Its worker does not notice its master's death, so stopping (and dropping)
/// kills the worker processes by their ids too.
pub struct Nginx {
    child: tokio::process::Child,
}

impl Nginx {
    pub fn pid(&self) -> u32 {
        self.child.id().unwrap_or(0)
    }

    fn kill_all(&mut self) {
        let pid = self.pid();
        if pid == 0 {
            return;
        }
        let workers = crate::stats::children(pid);
        let _ = self.child.start_kill();
        for w in workers {
            let _ = std::process::Command::new("kill")
                .arg("-KILL")
                .arg(w.to_string())
                .stderr(Stdio::null())
                .status();
        }
    }

    /// Kills master and workers and waits for the master.
    pub async fn stop(mut self) {
        self.kill_all();
        let _ = tokio::time::timeout(Duration::from_secs(10), self.child.wait()).await;
    }
}

impl Drop for Nginx {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            self.kill_all();
        }
    }
}

/// Starts nginx pinned to `cpu`, waits until both listeners accept.
pub async fn start(s: &Setup<'_>, cpu: usize) -> anyhow::Result<Nginx> {
    let conf = s.dir.join("nginx.conf");
    std::fs::write(&conf, config(s, is_root()))?;
    let err_log = s.dir.join("error.log");
    let test = std::process::Command::new(NGINX)
        .arg("-t")
        .arg("-q")
        .arg("-e")
        .arg(&err_log)
        .arg("-p")
        .arg(s.dir)
        .arg("-c")
        .arg(&conf)
        .output()
        .context("running nginx -t")?;
    if !test.status.success() {
        bail!("nginx -t: {}", String::from_utf8_lossy(&test.stderr).trim());
    }
    let child = pinned(Some(cpu), NGINX)
        .arg("-e")
        .arg(&err_log)
        .arg("-p")
        .arg(s.dir)
        .arg("-c")
        .arg(&conf)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .context("starting nginx")?;
    let mut nginx = Nginx { child };
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if tokio::net::TcpStream::connect(("127.0.0.1", s.http_port))
            .await
            .is_ok()
            && tokio::net::TcpStream::connect(("127.0.0.1", s.https_port))
                .await
                .is_ok()
        {
            return Ok(nginx);
        }
        if let Ok(Some(status)) = nginx.child.try_wait() {
            let log = std::fs::read_to_string(&err_log).unwrap_or_default();
            bail!("nginx exited ({status}): {}", log.trim());
        }
        if Instant::now() > deadline {
            bail!("nginx did not listen in 30 s (see {})", err_log.display());
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// `nginx/1.22.1`.
pub fn version() -> String {
    std::process::Command::new(NGINX)
        .arg("-v")
        .output()
        .ok()
        .map(|o| {
            String::from_utf8_lossy(&o.stderr)
                .trim()
                .trim_start_matches("nginx version: ")
                .to_owned()
        })
        .unwrap_or_else(|| "nginx".into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_config_proxies_mesos_dns_to_the_pool_with_the_routers_headers() {
        let dir = Path::new("/tmp/x");
        let s = Setup {
            dir,
            http_port: 1,
            https_port: 2,
            backend: "127.0.0.1:3",
            cert: Path::new("/tmp/x/c.pem"),
            key: Path::new("/tmp/x/k.pem"),
        };
        let c = config(&s, true);
        for want in [
            "worker_processes 1;",
            "user root root;",
            "server 127.0.0.1:3;",
            "keepalive 64;",
            "listen 127.0.0.1:1;",
            "listen 127.0.0.1:2 ssl;",
            "proxy_pass http://backend/;",
            "proxy_set_header Connection \"\";",
            "proxy_set_header X-Forwarded-Proto $scheme;",
            "ssl_certificate /tmp/x/c.pem;",
        ] {
            assert!(c.contains(want), "{want} missing in\n{c}");
        }
        assert!(!config(&s, false).contains("user root"));
    }
}
