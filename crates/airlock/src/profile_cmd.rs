//! `airlock profile list|show|validate`.

use anyhow::{anyhow, Context, Result};
use policy::profile::{self, Profile, ProfileRef};

use crate::cli::ProfileCommand;

pub fn run(cmd: ProfileCommand) -> Result<i32> {
    match cmd {
        ProfileCommand::List => {
            for name in profile::builtin_profile_names() {
                let description = profile::builtin_profile(name).and_then(|p| p.description).unwrap_or_default();
                println!("{name:<10} {description}");
            }
            Ok(0)
        }
        ProfileCommand::Show { name } => {
            match ProfileRef::from_arg(&name) {
                ProfileRef::Builtin(n) => {
                    let source = profile::builtin_profile_source(&n).ok_or_else(|| {
                        anyhow!(
                            "no built-in profile named {n:?} (built-ins: {})",
                            profile::builtin_profile_names().join(", ")
                        )
                    })?;
                    print!("{source}");
                }
                ProfileRef::File(path) => {
                    let text = std::fs::read_to_string(&path)
                        .with_context(|| format!("cannot read profile {}", path.display()))?;
                    Profile::parse(&text, &path.display().to_string())?;
                    print!("{text}");
                }
            }
            Ok(0)
        }
        ProfileCommand::Validate { file } => {
            let text = std::fs::read_to_string(&file).with_context(|| format!("cannot read profile {file}"))?;
            Profile::parse(&text, &file)?;
            println!("{file}: ok");
            Ok(0)
        }
    }
}
