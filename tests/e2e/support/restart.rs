//! Hot restart helpers: start the next generation of a running [`Baton`] (same `--base-id`,
//! same ports, `--restart-epoch` one higher), wait for a generation to serve or to exit, and
//! look at a process's file descriptors in `/proc`.

use std::path::Path;
use std::process::{Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use super::{local, try_get, Baton, TempDir, BATON};

/// How long a new generation may take to serve.
const SERVING_WITHIN: Duration = Duration::from_secs(10);

impl Baton {
    /// Start the next generation of this chain on `config` (placeholders filled with this
    /// generation's ports and the new temp dir) with `extra` arguments, without waiting.
    pub fn restart(&self, config: &str, extra: &[&str]) -> Baton {
        self.spawn_epoch(self.epoch + 1, config, extra)
    }

    /// Start `baton -c <config> --concurrency 2 --base-id <this chain's> --restart-epoch <epoch>
    /// <extra>` on this generation's ports, without waiting.
    pub fn spawn_epoch(&self, epoch: u32, config: &str, extra: &[&str]) -> Baton {
        self.spawn_epoch_env(epoch, config, extra, &[])
    }

    /// As [`Baton::restart`] with environment variables set for the new generation.
    pub fn restart_env(&self, config: &str, extra: &[&str], env: &[(&str, &str)]) -> Baton {
        self.spawn_epoch_env(self.epoch + 1, config, extra, env)
    }

    fn spawn_epoch_env(
        &self,
        epoch: u32,
        config: &str,
        extra: &[&str],
        env: &[(&str, &str)],
    ) -> Baton {
        let dir = TempDir::new("baton-next");
        let text = config
            .replace("{{LISTEN}}", &self.listen.to_string())
            .replace("{{ADMIN}}", &self.admin.to_string())
            .replace("{{DIR}}", &dir.path().display().to_string());
        let config_path = dir.file("baton.yaml");
        std::fs::write(&config_path, text).expect("write config");
        let out = std::fs::File::create(dir.file("stdout")).expect("stdout file");
        let err = std::fs::File::create(dir.file("stderr")).expect("stderr file");
        let child = Command::new(BATON)
            .arg("-c")
            .arg(&config_path)
            .args(["--concurrency", "2", "--base-id", &self.base_id.to_string()])
            .args(["--restart-epoch", &epoch.to_string()])
            .args(super::no_rollback_window_unless_given(extra))
            .args(extra)
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .spawn()
            .expect("spawn baton");
        Baton {
            child: Some(child),
            dir,
            listen: self.listen,
            admin: self.admin,
            config_path,
            base_id: self.base_id,
            epoch,
            chain: self.chain.clone(),
        }
    }

    /// Whether the process has exited (reaping it if so).
    pub fn exited(&mut self) -> Option<ExitStatus> {
        self.child
            .as_mut()
            .and_then(|c| c.try_wait().ok().flatten())
    }

    /// SIGKILL the process now (by pid) and reap it.
    pub fn kill(&mut self) {
        if let Some(c) = self.child.as_mut() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Poll the shared admin's `/hot_restart_status` until it is answered by this process in
    /// phase `serving`; the time that took. Panics with stderr if the process exits first or
    /// 10 s pass. (While two generations share the admin socket either may answer.)
    pub async fn wait_serving(&mut self) -> Duration {
        let start = Instant::now();
        let pid = self.pid();
        loop {
            if let Ok((200, body)) = try_get(local(self.admin), "/hot_restart_status").await {
                if let Ok(v) = serde_json::from_str::<serde_json::Value>(&body) {
                    let mine = v["pid"].as_u64() == Some(u64::from(pid));
                    if mine && v["phase"] == "serving" {
                        return start.elapsed();
                    }
                }
            }
            if let Some(s) = self.exited() {
                panic!(
                    "epoch {} exited ({s}) before serving\nstderr:\n{}",
                    self.epoch,
                    self.stderr()
                );
            }
            if start.elapsed() >= SERVING_WITHIN {
                panic!(
                    "epoch {} not serving within 10 s\nstderr:\n{}",
                    self.epoch,
                    self.stderr()
                );
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
}

/// Whether process `pid` still exists (and is not a zombie).
pub fn pid_alive(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        // The state follows the parenthesised command name.
        Ok(stat) => stat
            .rsplit_once(')')
            .and_then(|(_, rest)| rest.split_whitespace().next())
            .is_some_and(|state| state != "Z" && state != "X"),
        Err(_) => false,
    }
}

/// One open file descriptor of a process.
#[derive(Debug, Clone)]
pub struct Fd {
    pub fd: u32,
    /// Its `/proc/<pid>/fd` link target (`socket:[inode]`, `anon_inode:[eventpoll]`, a path).
    pub target: String,
    /// The `flags:` of its fdinfo (octal in /proc), e.g. `O_CLOEXEC` = `0o2000000`.
    pub flags: u32,
}

impl Fd {
    pub fn is_socket(&self) -> bool {
        self.target.starts_with("socket:")
    }

    pub fn cloexec(&self) -> bool {
        self.flags & 0o2_000_000 != 0
    }
}

/// The open file descriptors of `pid`.
pub fn fds(pid: u32) -> Vec<Fd> {
    let dir = format!("/proc/{pid}/fd");
    let mut out = Vec::new();
    let Ok(entries) = std::fs::read_dir(&dir) else {
        return out;
    };
    for e in entries.flatten() {
        let Some(fd) = e.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else {
            continue;
        };
        let Ok(target) = std::fs::read_link(e.path()) else {
            continue;
        };
        // An fd closed since the directory was read (a short-lived connection) is skipped,
        // not reported with made-up flags.
        let Ok(info) = std::fs::read_to_string(Path::new(&format!("/proc/{pid}/fdinfo/{fd}")))
        else {
            continue;
        };
        let Some(flags) = info
            .lines()
            .find_map(|l| l.strip_prefix("flags:"))
            .and_then(|v| u32::from_str_radix(v.trim(), 8).ok())
        else {
            continue;
        };
        out.push(Fd {
            fd,
            target: target.display().to_string(),
            flags,
        });
    }
    out.sort_by_key(|f| f.fd);
    out
}

/// The socket inodes of `pid`'s file descriptors.
pub fn socket_inodes(pid: u32) -> Vec<u64> {
    fds(pid)
        .iter()
        .filter_map(|f| {
            f.target
                .strip_prefix("socket:[")?
                .strip_suffix(']')?
                .parse()
                .ok()
        })
        .collect()
}
