//! `--home`, `--toolchains`, `--git-identity`, as the ordinary test user (whose home the test makes): a
//! toolchain under the home runs from the caller's PATH, read-only; the home's other content (`~/.ssh`) stays
//! out; `--home empty` is an empty home at the home's path; the git identity comes from the user's git config.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::os::unix::fs::PermissionsExt;
use std::process::{Command, Output};

fn stdout(o: &Output) -> String {
    assert!(o.status.success(), "airlock failed: {}", String::from_utf8_lossy(&o.stderr));
    String::from_utf8_lossy(&o.stdout).into_owned()
}

#[test]
fn toolchains_git_identity_and_an_empty_home_show_nothing_else_of_the_home() {
    require_sandbox!();
    let user = require_test_user!();
    let home = format!("/home/{user}");
    let state = common::TempDir::new("home-state");
    state.chown_to_test_user();
    // The user's home: a toolchain, a secret, a git identity.
    let _ = std::fs::remove_dir_all(&home);
    std::fs::create_dir_all(format!("{home}/.cargo/bin")).unwrap();
    std::fs::create_dir_all(format!("{home}/.ssh")).unwrap();
    std::fs::write(format!("{home}/.cargo/bin/fake-tool"), "#!/bin/sh\necho tool ran\n").unwrap();
    std::fs::set_permissions(format!("{home}/.cargo/bin/fake-tool"), std::fs::Permissions::from_mode(0o755)).unwrap();
    std::fs::write(format!("{home}/.ssh/id_ed25519"), "secret\n").unwrap();
    std::fs::write(format!("{home}/.gitconfig"), "[user]\n\tname = Test Person\n\temail = test@example.invalid\n")
        .unwrap();
    let uid = common::test_user_uid().to_string();
    let chown = Command::new("chown").args(["-R", &format!("{uid}:{uid}"), &home]).status().unwrap();
    assert!(chown.success());
    let env = [format!("HOME={home}"), format!("PATH={home}/.cargo/bin:/usr/bin:/bin")];
    let as_user = |args: &[&str]| common::airlock_as_user_in(state.path(), &env, args);

    let script = "fake-tool; echo $GIT_AUTHOR_NAME $GIT_COMMITTER_EMAIL; echo $HOME; \
                  ls ~/.ssh 2>/dev/null || echo no-ssh; cat $TOOL_HOME/.ssh/id_ed25519 2>/dev/null || echo no-secret; \
                  touch $TOOL_HOME/.cargo/bin/x 2>/dev/null || echo read-only";
    let env = format!("TOOL_HOME={home}");
    let out = stdout(&as_user(&["run", "--toolchains", "--git-identity", "--env", &env, "--", "sh", "-c", script]));
    assert_eq!(out, "tool ran\nTest Person test@example.invalid\n/tmp\nno-ssh\nno-secret\nread-only\n");

    // Without --toolchains the tool is not there (the caller's PATH never goes in).
    let out = as_user(&["run", "--", "sh", "-c", "fake-tool || echo missing"]);
    assert_eq!(stdout(&out), "missing\n");

    // --home empty: the home's path, empty and writable, gone after the run.
    let out = stdout(&as_user(&[
        "run",
        "--home",
        "empty",
        "--",
        "sh",
        "-c",
        "echo $HOME; ls -A ~ | wc -l; touch ~/f && echo wrote",
    ]));
    assert_eq!(out, format!("{home}\n0\nwrote\n"));
    assert!(!std::path::Path::new(&format!("{home}/f")).exists());

    // A mode that does not exist: one line, 125.
    let bad = as_user(&["run", "--home", "ro", "--", "true"]);
    assert_eq!(bad.status.code(), Some(125));
    let err = String::from_utf8_lossy(&bad.stderr);
    assert!(err.starts_with("airlock: ") && err.contains("expected tmp or empty") && err.lines().count() == 1, "{err}");
    let _ = std::fs::remove_dir_all(&home);
}
