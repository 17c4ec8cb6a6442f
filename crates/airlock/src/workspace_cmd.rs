//! `airlock diff NAME [--json|--patch] [PATH...]` and `airlock discard NAME [PATH...]`: what a sandbox changed in
//! its copy-on-write workspace, and dropping it. The caller resolves NAME to the layer's paths
//! ([`LayerPaths`]); everything here works from those alone.

use std::io::{self, Write};
use std::path::Path;

use anyhow::{Context, Result};
use clap::Args;
use serde::Serialize;
use store::layer::{self, Change, ChangeKind, EntryType, LayerPaths, LayerStack};

#[derive(Debug, Args)]
pub struct DiffArgs {
    /// The sandbox's name.
    pub name: String,
    /// One JSON document instead of text (fields: path, kind, old_type, new_type, mode, old_mode, size, old_hash,
    /// new_hash; with --exclude or --gitignore also excluded: count, sources).
    #[arg(long, conflicts_with = "patch")]
    pub json: bool,
    /// Unified diffs of the changed text files (a note for binary files, directories and symlinks).
    #[arg(long)]
    pub patch: bool,
    /// Leave out the paths this gitignore-style pattern matches (`node_modules/`, `*.pyc`, `/build`, `!keep.pyc`),
    /// relative to the workspace root; repeatable, a later pattern overriding an earlier one.
    #[arg(long, value_name = "PATTERN", value_parser = exclude_pattern)]
    pub exclude: Vec<String>,
    /// Also leave out what the workspace's .gitignore files and .git/info/exclude ignore, as the sandbox sees them
    /// (the host's and the ones it wrote). Off unless given.
    #[arg(long)]
    pub gitignore: bool,
    /// Only what changed at or under these paths (relative to the workspace, or absolute inside it).
    #[arg(value_name = "PATH")]
    pub paths: Vec<String>,
}

#[derive(Debug, Args)]
pub struct DiscardArgs {
    /// The sandbox's name.
    pub name: String,
    /// Only the changes at or under these paths (relative to the workspace, or absolute inside it); all when none.
    #[arg(value_name = "PATH")]
    pub paths: Vec<String>,
}

#[derive(Debug, Args)]
pub struct CommitArgs {
    /// The sandbox's name.
    pub name: String,
    /// Apply even the changes whose host file changed since the sandbox started (overwriting those host edits).
    #[arg(long)]
    pub force: bool,
    /// Leave in the layer (not applied) the paths this gitignore-style pattern matches (`node_modules/`, `*.pyc`, `/build`, `!keep.pyc`),
    /// relative to the workspace root; repeatable, a later pattern overriding an earlier one.
    #[arg(long, value_name = "PATTERN", value_parser = exclude_pattern)]
    pub exclude: Vec<String>,
    /// Also leave out what the workspace's .gitignore files and .git/info/exclude ignore, as the sandbox sees them
    /// (the host's and the ones it wrote). Off unless given.
    #[arg(long)]
    pub gitignore: bool,
    /// Only the changes at or under these paths (relative to the workspace, or absolute inside it); all when none.
    #[arg(value_name = "PATH")]
    pub paths: Vec<String>,
}

/// An `--exclude` value: one gitignore line.
fn exclude_pattern(arg: &str) -> Result<String, String> {
    match layer::check_patterns(&[arg.to_string()]) {
        Ok(()) => Ok(arg.to_string()),
        // clap names the flag and the value already: the reason alone.
        Err(layer::LayerError::InvalidExclude { reason, .. }) => Err(reason),
        Err(e) => Err(e.to_string()),
    }
}

fn exclude_of(patterns: &[String], gitignore: bool) -> layer::Exclude {
    layer::Exclude { patterns: patterns.to_vec(), gitignore }
}

/// `airlock commit NAME`: of a sandbox that has ended (holding its lock), or of a running long-lived one (its
/// processes stopped while the layer changes, see [`store::checkpoint::change`]).
pub fn commit_cmd(args: &CommitArgs) -> Result<i32> {
    let state = crate::state::state();
    if store::checkpoint::is_sandbox_running(&state, &args.name)? {
        let outcome = store::checkpoint::change(&state, &args.name, "commit", |copy| {
            let (outcome, excluded) = commit_layer(copy.stack, args, copy.created)?;
            let changed = matches!(&outcome, layer::CommitOutcome::Committed(changes) if !changes.is_empty());
            anyhow::Ok(((outcome, excluded, copy.stack.lower.clone()), changed))
        })?;
        let (outcome, excluded, workspace) = outcome;
        record_commit(&state, &args.name, &outcome, true);
        return report_commit(&outcome, &excluded, &workspace, true);
    }
    let claim = store::sandbox::claim_layer(&state, &args.name)?;
    commit(&claim, args)
}

/// The sandbox's audit log records every commit (what it applied) and every refused one (the conflicts).
fn record_commit(state: &store::StateDir, name: &str, outcome: &layer::CommitOutcome, running: bool) {
    let (action, changes) = match outcome {
        layer::CommitOutcome::Committed(changes) => ("commit", changes),
        layer::CommitOutcome::Refused(conflicts) => ("commit_refused", conflicts),
    };
    let paths: Vec<String> = changes.iter().map(|c| c.path.clone()).collect();
    session::recorder::record_workspace(state, name, action, None, &paths, running);
}

/// `airlock discard NAME`: as [`commit_cmd`], running or not.
pub fn discard_cmd(args: &DiscardArgs) -> Result<i32> {
    let state = crate::state::state();
    if store::checkpoint::is_sandbox_running(&state, &args.name)? {
        let dropped = store::checkpoint::change(&state, &args.name, "discard", |copy| {
            let dropped = discard_layer(copy.stack, args)?;
            let changed = !dropped.is_empty();
            anyhow::Ok((dropped, changed))
        })?;
        session::recorder::record_workspace(&state, &args.name, "discard", None, &dropped, true);
        report_discard(&dropped, true);
        return Ok(0);
    }
    let layer = store::sandbox::layer_of(&state, &args.name, true)?;
    discard(&layer, args)
}

fn commit_layer(
    stack: &LayerStack,
    args: &CommitArgs,
    created: f64,
) -> Result<(layer::CommitOutcome, layer::Excluded)> {
    let exclude = exclude_of(&args.exclude, args.gitignore);
    layer::commit_stack_excluding(stack, &args.paths, &exclude, created, args.force)
        .with_context(|| format!("cannot commit the workspace of sandbox {}", args.name))
}

fn discard_layer(stack: &LayerStack, args: &DiscardArgs) -> Result<Vec<String>> {
    layer::discard_stack(stack, &args.paths).with_context(|| format!("cannot discard changes of sandbox {}", args.name))
}

/// `airlock commit`: applies the changes to the host workspace and takes them out of the layer. Exit status 0;
/// 1 when a conflict refused the commit (nothing applied; the conflicting paths on stdout, one a line).
///
/// The caller holds the sandbox's lock (it is not running, and no other commit runs).
pub fn commit(claim: &crate::state::ClaimedLayer, args: &CommitArgs) -> Result<i32> {
    let layer = &claim.layer;
    let (outcome, excluded) = commit_layer(layer, args, claim.record.created)?;
    record_commit(&crate::state::state(), &args.name, &outcome, false);
    report_commit(&outcome, &excluded, &layer.lower, false)
}

/// Prints what a commit did; its exit status.
fn report_commit(
    outcome: &layer::CommitOutcome,
    excluded: &layer::Excluded,
    workspace: &Path,
    running: bool,
) -> Result<i32> {
    match outcome {
        layer::CommitOutcome::Committed(changes) => {
            let n = changes.len();
            let live = if running && n > 0 { " (running: new commands see them as the host's)" } else { "" };
            println!("committed {n} change{} to {}{live}", if n == 1 { "" } else { "s" }, workspace.display());
            if let Some(summary) = excluded.summary() {
                println!("{summary}, left in the layer");
            }
            Ok(0)
        }
        layer::CommitOutcome::Refused(conflicts) => {
            let n = conflicts.len();
            crate::say(&format!(
                "commit refused: {n} conflict{} (host files changed since the sandbox started); use --force to overwrite",
                if n == 1 { "" } else { "s" }
            ));
            let stdout = io::stdout();
            let mut out = io::BufWriter::new(stdout.lock());
            for conflict in conflicts {
                writeln!(out, "{}", layer::quote_path(&conflict.raw_path))?;
            }
            out.flush()?;
            Ok(1)
        }
    }
}

/// `airlock diff`: the changes, one line each and a summary; or `--json`; or `--patch`. Exit status 0.
pub fn diff(stack: &LayerStack, args: &DiffArgs) -> Result<i32> {
    // With checkpoints, the layers are composed into one view first (see `store::layer::compose`).
    let composed =
        layer::compose(stack).with_context(|| format!("cannot diff the workspace of sandbox {}", args.name))?;
    let layer = composed.paths();
    let exclude = exclude_of(&args.exclude, args.gitignore);
    let (changes, excluded) = layer::diff_excluding(layer, &args.paths, &exclude)
        .with_context(|| format!("cannot diff the workspace of sandbox {}", args.name))?;
    let stdout = io::stdout();
    let mut out = io::BufWriter::new(stdout.lock());
    if args.json {
        let excluded = (!exclude.is_empty()).then_some(&excluded);
        writeln!(out, "{}", diff_json(&args.name, layer, &changes, excluded)?)?;
    } else if args.patch {
        for change in &changes {
            let patch = layer::unified_patch(layer, change)
                .with_context(|| format!("cannot show the change to {}", layer::quote_path(&change.raw_path)))?;
            out.write_all(patch.as_bytes())?;
        }
    } else {
        for change in &changes {
            writeln!(out, "{}", human_line(change))?;
        }
        writeln!(out, "{}", summary(&changes))?;
    }
    if let Some(summary) = excluded.summary().filter(|_| !args.json) {
        // Nothing is left out without saying so: after the summary, or (so the patch stays one a tool can apply)
        // on stderr after a patch.
        if args.patch {
            out.flush()?;
            crate::say(&summary);
        } else {
            writeln!(out, "{summary}")?;
        }
    }
    out.flush()?;
    Ok(0)
}

/// `airlock discard`: drops the changes (all, or those at or under the PATHs) from the layer.
///
/// The caller makes sure nothing has the sandbox's overlay mounted (overlayfs does not allow its layers to change
/// under it).
pub fn discard(layer: &LayerStack, args: &DiscardArgs) -> Result<i32> {
    let dropped = discard_layer(layer, args)?;
    session::recorder::record_workspace(&crate::state::state(), &args.name, "discard", None, &dropped, false);
    report_discard(&dropped, false);
    Ok(0)
}

fn report_discard(dropped: &[String], running: bool) {
    let n = dropped.len();
    let live = if running && n > 0 { " (running: new commands see the host's files there)" } else { "" };
    println!("discarded {n} change{}{live}", if n == 1 { "" } else { "s" });
}

/// `airlock diff --json`: one document in the stable shape documented in README, fields in a fixed order.
/// With excludes, `excluded` says how many paths were left out and which patterns or files did it.
pub fn diff_json(
    name: &str,
    layer: &LayerPaths,
    changes: &[Change],
    excluded: Option<&layer::Excluded>,
) -> serde_json::Result<String> {
    let doc = DiffDoc {
        name,
        workspace: layer.lower.to_string_lossy().into_owned(),
        changes: changes.iter().map(ChangeDoc::from).collect(),
        excluded: excluded.map(|e| ExcludedDoc { count: e.changes.len(), sources: &e.sources }),
    };
    serde_json::to_string_pretty(&doc)
}

#[derive(Serialize)]
struct DiffDoc<'a> {
    name: &'a str,
    workspace: String,
    changes: Vec<ChangeDoc<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    excluded: Option<ExcludedDoc<'a>>,
}

#[derive(Serialize)]
struct ExcludedDoc<'a> {
    count: usize,
    sources: &'a [String],
}

/// One change in `airlock diff --json`, fields in this order. A name that is not UTF-8 is lossy in `path`;
/// `path_bytes` (hex) then holds it exactly, and is absent otherwise.
#[derive(Serialize)]
struct ChangeDoc<'a> {
    path: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    path_bytes: Option<String>,
    kind: &'static str,
    old_type: Option<&'static str>,
    new_type: Option<&'static str>,
    mode: Option<u32>,
    old_mode: Option<u32>,
    size: Option<u64>,
    old_hash: Option<&'a str>,
    new_hash: Option<&'a str>,
}

impl<'a> From<&'a Change> for ChangeDoc<'a> {
    fn from(c: &'a Change) -> Self {
        let path_bytes = c.raw_path.to_str().is_none().then(|| {
            use std::os::unix::ffi::OsStrExt;
            c.raw_path.as_os_str().as_bytes().iter().map(|b| format!("{b:02x}")).collect()
        });
        ChangeDoc {
            path: &c.path,
            path_bytes,
            kind: c.kind.as_str(),
            old_type: c.old_type.map(EntryType::as_str),
            new_type: c.new_type.map(EntryType::as_str),
            mode: c.mode,
            old_mode: c.old_mode,
            size: c.size,
            old_hash: c.old_hash.as_deref(),
            new_hash: c.new_hash.as_deref(),
        }
    }
}

/// `A  src/new.rs`, `M  run.sh (mode 644 -> 755)`, `D  old/`, `T  link (file -> symlink)`. Directories end in
/// `/`; a name with control characters, quotes or bytes that are not UTF-8 is quoted and escaped.
pub fn human_line(c: &Change) -> String {
    let letter = match c.kind {
        ChangeKind::Added => 'A',
        ChangeKind::Modified => 'M',
        ChangeKind::Deleted => 'D',
        ChangeKind::TypeChanged => 'T',
    };
    let mut path = layer::quote_path(&c.raw_path);
    let is_dir = match c.kind {
        ChangeKind::Deleted => c.old_type == Some(EntryType::Dir),
        ChangeKind::TypeChanged => false,
        _ => c.new_type == Some(EntryType::Dir),
    };
    if is_dir {
        path.push('/');
    }
    let ty = |t: Option<EntryType>| t.map_or("nothing", EntryType::as_str);
    match c.kind {
        ChangeKind::TypeChanged => format!("{letter}  {path} ({} -> {})", ty(c.old_type), ty(c.new_type)),
        ChangeKind::Modified if c.old_mode != c.mode => {
            let octal = |m: Option<u32>| m.map_or_else(|| "-".to_string(), |m| format!("{m:o}"));
            format!("{letter}  {path} (mode {} -> {})", octal(c.old_mode), octal(c.mode))
        }
        _ => format!("{letter}  {path}"),
    }
}

/// `3 changes: 1 added, 1 modified, 1 deleted`, or `no changes`.
pub fn summary(changes: &[Change]) -> String {
    if changes.is_empty() {
        return "no changes".to_string();
    }
    let count = |kind: ChangeKind| changes.iter().filter(|c| c.kind == kind).count();
    let parts: Vec<String> = [
        (ChangeKind::Added, "added"),
        (ChangeKind::Modified, "modified"),
        (ChangeKind::Deleted, "deleted"),
        (ChangeKind::TypeChanged, "type changed"),
    ]
    .into_iter()
    .filter_map(|(kind, word)| Some(count(kind)).filter(|&n| n > 0).map(|n| format!("{n} {word}")))
    .collect();
    let n = changes.len();
    format!("{n} change{}: {}", if n == 1 { "" } else { "s" }, parts.join(", "))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use std::ffi::OsStr;
    use std::os::unix::ffi::OsStrExt;
    use std::path::PathBuf;

    use serde_json::json;

    use super::*;

    fn change(path: &[u8], kind: ChangeKind, old: Option<EntryType>, new: Option<EntryType>) -> Change {
        let raw_path = PathBuf::from(OsStr::from_bytes(path));
        Change {
            path: raw_path.to_string_lossy().into_owned(),
            raw_path,
            kind,
            old_type: old,
            new_type: new,
            mode: new.map(|_| 0o644),
            old_mode: old.map(|_| 0o644),
            size: new.map(|_| 3),
            old_hash: old.map(|_| "aa".to_string()),
            new_hash: new.map(|_| "bb".to_string()),
        }
    }

    #[test]
    fn human_lines_are_one_line_each_and_unambiguous() {
        use ChangeKind::*;
        use EntryType::*;
        assert_eq!(human_line(&change(b"src/new.rs", Added, None, Some(File))), "A  src/new.rs");
        assert_eq!(human_line(&change(b"README.md", Modified, Some(File), Some(File))), "M  README.md");
        assert_eq!(human_line(&change(b"old", Deleted, Some(Dir), None)), "D  old/");
        assert_eq!(human_line(&change(b"link", TypeChanged, Some(File), Some(Symlink))), "T  link (file -> symlink)");
        let mut chmod = change(b"run.sh", Modified, Some(File), Some(File));
        chmod.mode = Some(0o755);
        assert_eq!(human_line(&chmod), "M  run.sh (mode 644 -> 755)");
        assert_eq!(human_line(&change(b"a\nD  b", Added, None, Some(File))), "A  \"a\\nD  b\"");
        assert_eq!(human_line(&change(b"\x1b]0;x\x07", Added, None, Some(File))), "A  \"\\x1b]0;x\\x07\"");
        assert_eq!(human_line(&change(b"bad\xff", Added, None, Some(File))), "A  \"bad\\xff\"");
    }

    #[test]
    fn summary_counts_each_kind() {
        use ChangeKind::*;
        use EntryType::*;
        assert_eq!(summary(&[]), "no changes");
        let changes = [
            change(b"a", Added, None, Some(File)),
            change(b"m", Modified, Some(File), Some(File)),
            change(b"d", Deleted, Some(File), None),
        ];
        assert_eq!(summary(&changes), "3 changes: 1 added, 1 modified, 1 deleted");
        assert_eq!(summary(&changes[..1]), "1 change: 1 added");
        let t = [change(b"t", TypeChanged, Some(Dir), Some(File)), change(b"u", TypeChanged, Some(File), Some(Dir))];
        assert_eq!(summary(&t), "2 changes: 2 type changed");
    }

    #[test]
    fn json_has_the_stable_fields() {
        use ChangeKind::*;
        use EntryType::*;
        let layer = LayerPaths { upper: "/state/upper".into(), lower: "/srv/app".into() };
        let changes =
            [change(b"src/a.rs", Modified, Some(File), Some(File)), change(b"x\xff", Deleted, Some(Symlink), None)];
        let text = diff_json("box", &layer, &changes, None).unwrap();
        let at = |key: &str| text.find(&format!("\"{key}\":")).unwrap();
        assert!(at("name") < at("workspace") && at("workspace") < at("changes"), "{text}");
        assert!(at("path") < at("kind") && at("kind") < at("old_type") && at("mode") < at("new_hash"), "{text}");
        let doc: serde_json::Value = serde_json::from_str(&text).unwrap();
        assert_eq!(doc["name"], "box");
        assert_eq!(doc["workspace"], "/srv/app");
        assert_eq!(
            doc["changes"][0],
            json!({"path": "src/a.rs", "kind": "modified", "old_type": "file", "new_type": "file", "mode": 420,
                   "old_mode": 420, "size": 3, "old_hash": "aa", "new_hash": "bb"})
        );
        let deleted = &doc["changes"][1];
        assert_eq!((deleted["kind"].as_str(), deleted["old_type"].as_str()), (Some("deleted"), Some("symlink")));
        assert!(deleted["new_type"].is_null() && deleted["mode"].is_null() && deleted["new_hash"].is_null());
        assert_eq!(deleted["path"], "x\u{fffd}");
        assert_eq!(deleted["path_bytes"], "78ff");
        assert!(doc["changes"][0].get("path_bytes").is_none());
    }
}
