//! Finding a function's program on PATH before exec has to: once, at start, in the fork
//! modes, instead of once per request.
//!
//! Given a bare name, posix_spawnp tries execve in every PATH directory in turn, and each
//! miss is a system call that walks directories. Fork modes start a process per request, so
//! with a container's usual PATH that is three failed execve calls per request for a program
//! in /usr/bin. Resolving the name once keeps the search out of the
//! request path; the process still sees the bare name as its argv[0]. (Each failed execve
//! copies the whole argument list and environment into the kernel before the lookup fails;
//! a stat does not.)

use std::ffi::{OsStr, OsString};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

/// What to exec for `name`: where [`resolve`] finds it on this process's PATH now, or the
/// name itself, left to exec's own search.
pub fn find(name: &str) -> OsString {
    resolve(name, std::env::var_os("PATH").as_deref()).map_or_else(|| name.into(), Into::into)
}

/// A command for `name`, found on PATH now ([`find`]) and given the bare name as its argv[0];
/// for processes started once or a few times (http mode's server, worker mode's pool), where
/// looking up again per start costs nothing that matters.
pub fn command(name: &str) -> tokio::process::Command {
    let mut cmd = tokio::process::Command::new(find(name));
    cmd.arg0(name);
    cmd
}

/// musl's and glibc's search path when PATH is unset.
const DEFAULT_PATH: &str = "/usr/local/bin:/bin:/usr/bin";

/// Where the exec family would find `name` on `path` (PATH's value, `None` when unset), as an
/// absolute path; `None` when `name` has a slash (it is used as it is), when nothing on PATH
/// is an executable file of that name, or when the search would reach a relative entry
/// first (which names a different place whenever the working directory changes).
pub fn resolve(name: &str, path: Option<&OsStr>) -> Option<PathBuf> {
    if name.is_empty() || name.contains('/') {
        return None;
    }
    let path = path.unwrap_or(OsStr::new(DEFAULT_PATH));
    for dir in path.as_bytes().split(|&b| b == b':') {
        let dir = Path::new(OsStr::from_bytes(dir));
        if !dir.is_absolute() {
            return None;
        }
        let candidate = dir.join(name);
        if is_executable_file(&candidate) {
            return Some(candidate);
        }
    }
    None
}

fn is_executable_file(path: &Path) -> bool {
    let Ok(meta) = std::fs::metadata(path) else {
        return false;
    };
    // The kernel's own check for this process's credentials (which for root still needs
    // some execute bit).
    meta.is_file() && nix::unistd::access(path, nix::unistd::AccessFlags::X_OK).is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;
    use std::os::unix::fs::PermissionsExt;

    /// A fresh directory holding `files` (name, mode), removed when dropped.
    struct Dir(PathBuf);

    impl Dir {
        fn path(&self) -> &Path {
            &self.0
        }
    }

    impl Drop for Dir {
        fn drop(&mut self) {
            let _ = fs::remove_dir_all(&self.0);
        }
    }

    fn dir_with(files: &[(&str, u32)]) -> Dir {
        static NEXT: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let dir =
            Dir(std::env::temp_dir().join(format!("fwatchdog-path-{}-{n}", std::process::id())));
        fs::create_dir_all(dir.path()).unwrap();
        for (name, mode) in files {
            let p = dir.path().join(name);
            fs::write(&p, b"#!/bin/sh\n").unwrap();
            fs::set_permissions(&p, fs::Permissions::from_mode(*mode)).unwrap();
        }
        dir
    }

    fn join(dirs: &[&Path]) -> OsString {
        let parts: Vec<&OsStr> = dirs.iter().map(|d| d.as_os_str()).collect();
        parts.join(OsStr::new(":"))
    }

    #[test]
    fn the_first_executable_on_path_wins() {
        let a = dir_with(&[("f", 0o644)]);
        let b = dir_with(&[("f", 0o755)]);
        let c = dir_with(&[("f", 0o755)]);
        let path = join(&[a.path(), b.path(), c.path()]);
        assert_eq!(resolve("f", Some(&path)), Some(b.path().join("f")));
    }

    #[test]
    fn directories_and_missing_names_are_not_programs() {
        let a = dir_with(&[]);
        fs::create_dir(a.path().join("d")).unwrap();
        let path = join(&[a.path()]);
        assert_eq!(resolve("d", Some(&path)), None);
        assert_eq!(resolve("nothing", Some(&path)), None);
    }

    #[test]
    fn names_with_a_slash_and_relative_entries_are_left_to_exec() {
        let a = dir_with(&[("f", 0o755)]);
        let path = join(&[a.path()]);
        assert_eq!(resolve("./f", Some(&path)), None);
        assert_eq!(resolve("", Some(&path)), None);
        let relative_first = join(&[Path::new("bin"), a.path()]);
        assert_eq!(resolve("f", Some(&relative_first)), None);
        let relative_after = join(&[a.path(), Path::new("")]);
        assert_eq!(
            resolve("f", Some(&relative_after)),
            Some(a.path().join("f"))
        );
    }

    #[test]
    fn a_command_runs_the_program_found_under_its_bare_name() {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let out = rt
            .block_on(async { command("cat").arg("/proc/self/cmdline").output().await })
            .unwrap();
        assert!(out.status.success());
        assert_eq!(out.stdout, b"cat\0/proc/self/cmdline\0");
        let missing = rt.block_on(async { command("no-such-program-anywhere").status().await });
        assert_eq!(missing.unwrap_err().kind(), std::io::ErrorKind::NotFound);
    }

    #[test]
    fn an_unset_path_searches_the_libc_default() {
        let found = resolve("sh", None).expect("sh on the default path");
        assert!(found.is_absolute() && found.ends_with("sh"), "{found:?}");
    }
}
