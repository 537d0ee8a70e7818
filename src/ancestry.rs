//! Whether a process descends from the spawned child, by its chain of
//! parent pids: the check that the systemd receiver applies to a sender and
//! to `MAINPID=`, and the native driver to a main pid named in `Ready`
//! (PROTOCOL.md §6.4). No I/O here: the lookup of a parent comes in as a
//! parameter ([`sys::parent_pid`](crate::sys::parent_pid) in use).

use std::io;

/// How many parent links the check follows.
const ANCESTRY_DEPTH: usize = 64;

/// A process's parent pid, as the check follows it: `Err` when it cannot
/// be read (the process is gone, or there is no `/proc`).
pub(crate) type ParentPid<'a> = &'a dyn Fn(u32) -> io::Result<u32>;

/// Where a chain of parents must lead for a process to count.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Ancestry {
    /// Our own pid: the walk stops there.
    pub(crate) ours: u32,
    /// Whether a process whose chain reaches our own pid counts (it was
    /// reparented to us: see `ReadyCommand::accept_adopted`).
    pub(crate) adopted: bool,
    /// Whether `/proc` can be read, so that a parent that cannot be looked
    /// up means a broken chain rather than an unverifiable one.
    pub(crate) proc_ok: bool,
}

impl Ancestry {
    /// Whether `pid` is a root (`is_root`: the spawned child, and whatever
    /// else the caller counts as one) or a descendant of one, or, when
    /// `adopted`, was reparented to us (never ourselves). `None` when that
    /// cannot be checked because `/proc` cannot be read: the caller refuses
    /// then, never guesses.
    pub(crate) fn descends(
        &self,
        pid: u32,
        is_root: impl Fn(u32) -> bool,
        parent_pid: ParentPid<'_>,
    ) -> Option<bool> {
        let mut p = pid;
        for _ in 0..ANCESTRY_DEPTH {
            if is_root(p) {
                return Some(true);
            }
            if p == self.ours {
                // Reparented to us (never ourselves).
                return Some(self.adopted && p != pid);
            }
            if p <= 1 {
                return Some(false);
            }
            match parent_pid(p) {
                Ok(pp) => p = pp,
                Err(_) if !self.proc_ok => return None,
                Err(_) => return Some(false),
            }
        }
        Some(false)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// 10 <- 20 <- 30 (our pid 5 is the parent of 10 and of 40).
    fn parents(pid: u32) -> io::Result<u32> {
        match pid {
            10 | 40 => Ok(5),
            20 => Ok(10),
            30 => Ok(20),
            5 => Ok(1),
            _ => Err(io::ErrorKind::NotFound.into()),
        }
    }

    #[test]
    fn descendants_count_others_do_not() {
        let a = Ancestry {
            ours: 5,
            adopted: false,
            proc_ok: true,
        };
        let root = |p| p == 10;
        assert_eq!(a.descends(10, root, &parents), Some(true));
        assert_eq!(a.descends(30, root, &parents), Some(true));
        assert_eq!(a.descends(40, root, &parents), Some(false));
        assert_eq!(a.descends(5, root, &parents), Some(false), "ourselves");
        assert_eq!(a.descends(1, root, &parents), Some(false), "init");
        assert_eq!(a.descends(99, root, &parents), Some(false), "gone");
        let adopted = Ancestry { adopted: true, ..a };
        assert_eq!(adopted.descends(40, root, &parents), Some(true));
        assert_eq!(adopted.descends(5, root, &parents), Some(false));
        let no_proc = Ancestry {
            proc_ok: false,
            ..a
        };
        assert_eq!(no_proc.descends(99, root, &parents), None);
    }
}
