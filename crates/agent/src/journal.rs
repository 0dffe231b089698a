//! The command journal: a file per command task this host has started,
//! written (and synced) before the command runs.
//!
//! The control plane learns that a task runs from the agent's next report.
//! An agent that dies between starting a command and that report would,
//! once restarted, see the task still `PENDING` and run it a second time —
//! and a command is not idempotent. With the journal the restarted agent
//! knows it started the task, and reports it failed ("result lost") instead
//! of running it again. Entries go once the control plane no longer lists
//! the task.

use std::collections::HashSet;
use std::path::{Path, PathBuf};

/// Task IDs started on this host, kept in a directory.
#[derive(Debug)]
pub struct CommandJournal {
    dir: PathBuf,
    started: HashSet<String>,
}

/// Only plain task IDs name files.
fn plain(task_id: &str) -> bool {
    !task_id.is_empty()
        && task_id.len() <= 64
        && task_id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

impl CommandJournal {
    /// Opens (creating) the journal in `dir` and reads what it holds.
    pub fn open(dir: &Path) -> std::io::Result<Self> {
        std::fs::create_dir_all(dir)?;
        let mut started = HashSet::new();
        for e in std::fs::read_dir(dir)? {
            let name = e?.file_name().to_string_lossy().into_owned();
            if plain(&name) {
                started.insert(name);
            } else {
                // A temporary left by a crash mid-write: the task never ran.
                let _ = std::fs::remove_file(dir.join(&name));
            }
        }
        Ok(Self {
            dir: dir.to_path_buf(),
            started,
        })
    }

    /// Whether this host started the task (in this run or an earlier one).
    pub fn started(&self, task_id: &str) -> bool {
        self.started.contains(task_id)
    }

    /// Records, durably, that the task is about to start.
    pub fn record(&mut self, task_id: &str) -> std::io::Result<()> {
        if !plain(task_id) {
            return Err(std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                format!("`{task_id}` is not a task ID"),
            ));
        }
        let tmp = self.dir.join(format!(".{task_id}.tmp"));
        std::fs::File::create(&tmp)?.sync_all()?;
        std::fs::rename(&tmp, self.dir.join(task_id))?;
        std::fs::File::open(&self.dir)?.sync_all()?;
        self.started.insert(task_id.to_string());
        Ok(())
    }

    /// Forgets every task not in `wanted` (the control plane is done with it).
    pub fn keep_only(&mut self, wanted: &HashSet<String>) {
        let dir = &self.dir;
        self.started.retain(|id| {
            let keep = wanted.contains(id);
            if !keep {
                let _ = std::fs::remove_file(dir.join(id));
            }
            keep
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_survive_a_reopen_until_forgotten() {
        let d = tempfile::tempdir().unwrap();
        let mut j = CommandJournal::open(d.path()).unwrap();
        j.record("invt-aaaa1111").unwrap();
        j.record("invt-bbbb2222").unwrap();
        assert!(j.record("../etc/passwd").is_err());
        assert!(j.record("").is_err());
        std::fs::write(d.path().join(".invt-cccc3333.tmp"), "").unwrap();
        let mut j = CommandJournal::open(d.path()).unwrap();
        assert!(j.started("invt-aaaa1111") && j.started("invt-bbbb2222"));
        assert!(
            !j.started("invt-cccc3333"),
            "a half-written entry is no entry"
        );
        assert!(!d.path().join(".invt-cccc3333.tmp").exists());
        j.keep_only(&["invt-bbbb2222".to_string()].into_iter().collect());
        let j = CommandJournal::open(d.path()).unwrap();
        assert!(!j.started("invt-aaaa1111") && j.started("invt-bbbb2222"));
    }
}
