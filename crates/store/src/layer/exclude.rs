//! Leaving paths out of a diff or a commit: `--exclude PATTERN` and `--gitignore`.
//!
//! Patterns are gitignore lines (`node_modules/`, `*.pyc`, `/build`, `!keep.pyc`), matched by the `ignore`
//! crate (ripgrep's) against paths relative to the workspace root. With `gitignore`, the workspace's own
//! ignore files count too, as git reads them: `.git/info/exclude`, then every `.gitignore` from the root down to
//! the path's directory, a deeper one overriding a shallower one. They are read from the *merged* view (the
//! layer over the host workspace): a `.gitignore` the sandbox wrote or changed counts as it wrote it, one it
//! deleted does not count. `--exclude` patterns come last and override all files, as git's `-x` does.
//!
//! As in git, a path under an excluded directory is excluded whatever a negation says about the path itself.
//! A change that removes a host directory (deleted, or replaced by a file) is left out as well when something
//! under it is excluded: applying it would remove the excluded entries from the host too.

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};

use ignore::gitignore::{Gitignore, GitignoreBuilder};
use ignore::Match;

use super::{quote_path, read_beneath, Change, EntryType, LayerError, LayerPaths};

/// What to leave out of a diff or a commit. Empty (the default): nothing.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Exclude {
    /// gitignore-style patterns, in order (a later one overrides an earlier one).
    pub patterns: Vec<String>,
    /// Honour the workspace's `.gitignore` files and `.git/info/exclude`.
    pub gitignore: bool,
}

impl Exclude {
    pub fn is_empty(&self) -> bool {
        self.patterns.is_empty() && !self.gitignore
    }
}

/// The changes left out, and why: each pattern or ignore file that excluded at least one, in the order first
/// met (patterns as given, files as paths relative to the workspace, both quoted when not plain).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Excluded {
    pub changes: Vec<Change>,
    pub sources: Vec<String>,
}

impl Excluded {
    /// `12 paths excluded (node_modules/, .gitignore)`, or `None` when nothing was.
    pub fn summary(&self) -> Option<String> {
        let n = self.changes.len();
        (n > 0).then(|| format!("{n} path{} excluded ({})", if n == 1 { "" } else { "s" }, self.sources.join(", ")))
    }
}

/// The longest pattern taken (a gitignore line is short; this keeps a hostile one from costing much).
const MAX_PATTERN: usize = 4096;
/// How many `--exclude` patterns one call takes.
const MAX_PATTERNS: usize = 1024;
/// Where git keeps a repository's own, uncommitted excludes.
const INFO_EXCLUDE: &str = ".git/info/exclude";

/// Checks the patterns (before anything is read): not empty, one line, no NUL, a valid glob.
pub fn check_patterns(patterns: &[String]) -> Result<(), LayerError> {
    cli_matcher(patterns).map(|_| ())
}

/// Splits `changes` (sorted by path, as a diff lists them) into those kept and those excluded. `all` is every
/// change in the layer (not only those under the PATH filters): it tells which ignore files the sandbox wrote.
pub fn split(
    paths: &LayerPaths,
    changes: Vec<Change>,
    all: &[Change],
    exclude: &Exclude,
) -> Result<(Vec<Change>, Excluded), LayerError> {
    if exclude.is_empty() {
        return Ok((changes, Excluded::default()));
    }
    let mut matcher = Matcher {
        cli: cli_matcher(&exclude.patterns)?,
        gitignore: exclude.gitignore,
        paths,
        merged: all.iter().map(|c| (c.raw_path.clone(), c.new_type)).collect(),
        files: HashMap::new(),
        info: None,
        dirs: HashMap::new(),
    };
    let mut reasons: Vec<Option<String>> = Vec::with_capacity(changes.len());
    for change in &changes {
        let is_dir = match change.new_type {
            Some(ty) => ty == EntryType::Dir,
            None => change.old_type == Some(EntryType::Dir),
        };
        reasons.push(matcher.excluded(&change.raw_path, is_dir)?);
    }
    // A change that removes a host directory goes only when nothing under it stays behind (deepest first, so a
    // directory sees what its subdirectories decided).
    for i in (0..changes.len()).rev() {
        let change = &changes[i];
        let removes_dir = change.old_type == Some(EntryType::Dir) && change.new_type != Some(EntryType::Dir);
        if !removes_dir || reasons[i].is_some() {
            continue;
        }
        let under = changes[i + 1..]
            .iter()
            .zip(&reasons[i + 1..])
            .take_while(|(c, _)| c.raw_path.starts_with(&change.raw_path))
            .find_map(|(_, r)| r.clone());
        reasons[i] = under;
    }
    let mut kept = Vec::new();
    let mut excluded = Excluded::default();
    let mut seen = HashSet::new();
    for (change, reason) in changes.into_iter().zip(reasons) {
        match reason {
            None => kept.push(change),
            Some(reason) => {
                if seen.insert(reason.clone()) {
                    excluded.sources.push(reason);
                }
                excluded.changes.push(change);
            }
        }
    }
    Ok((kept, excluded))
}

fn cli_matcher(patterns: &[String]) -> Result<Option<Gitignore>, LayerError> {
    if patterns.is_empty() {
        return Ok(None);
    }
    if patterns.len() > MAX_PATTERNS {
        return Err(LayerError::InvalidExclude {
            pattern: String::new(),
            reason: format!("more than {MAX_PATTERNS} patterns"),
        });
    }
    let mut builder = GitignoreBuilder::new(".");
    for pattern in patterns {
        let invalid = |reason: String| LayerError::InvalidExclude { pattern: pattern.clone(), reason };
        if pattern.trim().is_empty() {
            return Err(invalid("empty pattern".into()));
        }
        if pattern.len() > MAX_PATTERN {
            return Err(invalid(format!("longer than {MAX_PATTERN} bytes")));
        }
        if pattern.contains(['\n', '\r', '\0']) {
            return Err(invalid("a pattern is one line, without NUL".into()));
        }
        if pattern.starts_with('#') {
            return Err(invalid("a pattern starting with `#` is a comment (write `\\#` for a name)".into()));
        }
        builder.add_line(None, pattern).map_err(|e| invalid(e.to_string()))?;
    }
    builder
        .build()
        .map(Some)
        .map_err(|e| LayerError::InvalidExclude { pattern: patterns.join(" "), reason: e.to_string() })
}

struct Matcher<'a> {
    cli: Option<Gitignore>,
    gitignore: bool,
    paths: &'a LayerPaths,
    /// Every changed path's type in the layer (`None`: deleted there); a path not listed is as on the host.
    merged: HashMap<PathBuf, Option<EntryType>>,
    /// Each directory's `.gitignore` (`None`: it has none), read once.
    files: HashMap<PathBuf, Option<Gitignore>>,
    info: Option<Option<Gitignore>>,
    /// Each directory's verdict, decided once.
    dirs: HashMap<PathBuf, Option<String>>,
}

impl Matcher<'_> {
    /// Why `rel` is excluded (the pattern or file), or `None`. An ancestor directory excluded excludes it.
    fn excluded(&mut self, rel: &Path, is_dir: bool) -> Result<Option<String>, LayerError> {
        let mut prefix = PathBuf::new();
        let components: Vec<_> = rel.iter().collect();
        for (i, component) in components.iter().enumerate() {
            prefix.push(component);
            let last = i + 1 == components.len();
            if last {
                return self.decide(&prefix, is_dir);
            }
            if let Some(reason) = self.dirs.get(&prefix) {
                if reason.is_some() {
                    return Ok(reason.clone());
                }
                continue;
            }
            let reason = self.decide(&prefix, true)?;
            self.dirs.insert(prefix.clone(), reason.clone());
            if reason.is_some() {
                return Ok(reason);
            }
        }
        Ok(None)
    }

    /// The verdict on `rel` itself (its ancestors not looked at): `--exclude` first, then the deepest
    /// `.gitignore` with a matching line, then `.git/info/exclude`.
    fn decide(&mut self, rel: &Path, is_dir: bool) -> Result<Option<String>, LayerError> {
        if let Some(cli) = &self.cli {
            match cli.matched(rel, is_dir) {
                Match::Ignore(glob) => return Ok(Some(quote_path(Path::new(glob.original())))),
                Match::Whitelist(_) => return Ok(None),
                Match::None => {}
            }
        }
        if !self.gitignore {
            return Ok(None);
        }
        let mut dir = rel.parent();
        while let Some(d) = dir {
            let file = d.join(".gitignore");
            if let Some(gi) = self.file(d)? {
                let Ok(sub) = rel.strip_prefix(d) else { break };
                match gi.matched(sub, is_dir) {
                    Match::Ignore(_) => return Ok(Some(quote_path(&file))),
                    Match::Whitelist(_) => return Ok(None),
                    Match::None => {}
                }
            }
            dir = d.parent();
        }
        if let Some(info) = self.info()? {
            if let Match::Ignore(_) = info.matched(rel, is_dir) {
                return Ok(Some(INFO_EXCLUDE.to_string()));
            }
        }
        Ok(None)
    }

    fn file(&mut self, dir: &Path) -> Result<Option<&Gitignore>, LayerError> {
        if !self.files.contains_key(dir) {
            let gi = self.read(&dir.join(".gitignore"))?;
            self.files.insert(dir.to_path_buf(), gi);
        }
        Ok(self.files.get(dir).and_then(Option::as_ref))
    }

    fn info(&mut self) -> Result<Option<&Gitignore>, LayerError> {
        if self.info.is_none() {
            let gi = self.read(Path::new(INFO_EXCLUDE))?;
            self.info = Some(gi);
        }
        Ok(self.info.as_ref().and_then(Option::as_ref))
    }

    /// An ignore file of the merged view, built into a matcher for its directory (lines that are no valid
    /// pattern are skipped, as git skips them). A file that is not there, not a regular file (a symlink is not
    /// followed) or cannot be read counts as none: then more is shown, never less.
    fn read(&self, rel: &Path) -> Result<Option<Gitignore>, LayerError> {
        let tree = match self.merged.get(rel) {
            Some(Some(EntryType::File)) => &self.paths.upper,
            Some(_) => return Ok(None),
            None => &self.paths.lower,
        };
        let Ok(Some(content)) = read_beneath(tree, rel) else { return Ok(None) };
        let mut builder = GitignoreBuilder::new(".");
        for line in String::from_utf8_lossy(&content).lines() {
            let _ = builder.add_line(Some(rel.to_path_buf()), line);
        }
        Ok(builder.build().ok())
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use std::ffi::OsStr;
    use std::os::unix::ffi::OsStrExt;

    use super::*;
    use crate::layer::ChangeKind;

    fn added(path: &[u8], ty: EntryType) -> Change {
        let raw_path = PathBuf::from(OsStr::from_bytes(path));
        Change {
            path: raw_path.to_string_lossy().into_owned(),
            raw_path,
            kind: ChangeKind::Added,
            old_type: None,
            new_type: Some(ty),
            mode: Some(0o644),
            old_mode: None,
            size: Some(0),
            old_hash: None,
            new_hash: None,
        }
    }

    fn run(patterns: &[&str], changes: Vec<Change>) -> (Vec<String>, Excluded) {
        let paths = LayerPaths { upper: "/nonexistent/upper".into(), lower: "/nonexistent/lower".into() };
        let exclude = Exclude { patterns: patterns.iter().map(|p| p.to_string()).collect(), gitignore: false };
        let all = changes.clone();
        let (kept, excluded) = split(&paths, changes, &all, &exclude).unwrap();
        (kept.into_iter().map(|c| c.path).collect(), excluded)
    }

    #[test]
    fn patterns_as_gitignore_lines() {
        use EntryType::*;
        let changes = vec![
            added(b"a.pyc", File),
            added(b"build", Dir),
            added(b"build/x", File),
            added(b"keep.pyc", File),
            added(b"node_modules", Dir),
            added(b"node_modules/left-pad/index.js", File),
            added(b"src", Dir),
            added(b"src/build", File),
            added(b"src/main.rs", File),
            added(b"src/node_modules", File),
        ];
        let (kept, excluded) = run(&["node_modules/", "*.pyc", "/build", "!keep.pyc"], changes);
        assert_eq!(kept, ["keep.pyc", "src", "src/build", "src/main.rs", "src/node_modules"]);
        assert_eq!(excluded.changes.len(), 5);
        assert_eq!(excluded.sources, ["*.pyc", "/build", "node_modules/"]);
        assert_eq!(excluded.summary().unwrap(), "5 paths excluded (*.pyc, /build, node_modules/)");
    }

    #[test]
    fn a_negation_cannot_bring_back_a_path_under_an_excluded_directory() {
        let changes = vec![added(b"venv", EntryType::Dir), added(b"venv/keep.txt", EntryType::File)];
        let (kept, _) = run(&["venv/", "!venv/keep.txt"], changes);
        assert!(kept.is_empty(), "{kept:?}");
    }

    #[test]
    fn hostile_names_match_and_stay_one_line() {
        use EntryType::*;
        let long = [b'x'; 255];
        let mut long_pyc = long[..251].to_vec();
        long_pyc.extend_from_slice(b".pyc");
        let changes = vec![
            added(b"a\nb.pyc", File),
            added(b"..pyc", File),
            added(b"...", File),
            added(b"bad\xff.pyc", File),
            added(&long, File),
            added(&long_pyc, File),
        ];
        let (kept, excluded) = run(&["*.pyc", "a\\nb"], changes);
        assert_eq!(kept, ["...", String::from_utf8_lossy(&long).as_ref()]);
        assert_eq!(excluded.changes.len(), 4);
        assert!(!excluded.summary().unwrap().contains('\n'));
    }

    #[test]
    fn a_directory_removal_stays_when_something_under_it_is_excluded() {
        let deleted = |path: &[u8], ty: EntryType| {
            let mut c = added(path, ty);
            (c.kind, c.old_type, c.new_type) = (ChangeKind::Deleted, Some(ty), None);
            c
        };
        let changes = vec![
            deleted(b"build", EntryType::Dir),
            deleted(b"build/out", EntryType::Dir),
            deleted(b"build/out/a.pyc", EntryType::File),
            deleted(b"build/out/b.o", EntryType::File),
            deleted(b"gone", EntryType::Dir),
            deleted(b"gone/x.txt", EntryType::File),
        ];
        let (kept, excluded) = run(&["*.pyc"], changes);
        // Removing build/ or build/out/ from the host would remove the excluded a.pyc with them.
        assert_eq!(kept, ["build/out/b.o", "gone", "gone/x.txt"]);
        assert_eq!(excluded.changes.len(), 3);
        assert_eq!(excluded.sources, ["*.pyc"]);
    }

    #[test]
    fn bad_patterns_are_refused() {
        for bad in ["", " ", "a\nb", "x\0", "#comment"] {
            assert!(check_patterns(&[bad.to_string()]).is_err(), "{bad:?}");
        }
        assert!(check_patterns(&["x".repeat(MAX_PATTERN + 1)]).is_err());
        assert!(check_patterns(&["*.pyc".into(), "\\#x".into(), "!keep".into()]).is_ok());
    }
}
