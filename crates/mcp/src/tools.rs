//! The MCP tools (`../shared/design/api.md`, "MCP server"): their JSON-schema'd inputs, the checks every input
//! gets before anything runs, and their answers (JSON text; a refusal is `isError: true` and the `airlock:`
//! sentence).

use std::sync::Arc;

use base64::Engine as _;
use rmcp::handler::server::wrapper::Parameters;
use rmcp::model::{CallToolResult, ContentBlock};
use rmcp::{tool, tool_handler, tool_router, ErrorData, ServerHandler};
use schemars::JsonSchema;
use serde::Deserialize;
use serde_json::{json, Value};

use crate::backend::{Backend, FileAnswer, SandboxRequest};
use crate::error::ToolError;

/// A duration: `"30s"`, `"5m"`, `"2h"`, or a number of seconds.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(untagged)]
pub enum DurationArg {
    Seconds(u64),
    Text(String),
}

impl DurationArg {
    /// The checked duration as airlock's flags take it.
    fn checked(&self, field: &str) -> Result<String, ToolError> {
        let text = match self {
            DurationArg::Seconds(n) => format!("{n}s"),
            DurationArg::Text(t) => t.trim().to_string(),
        };
        policy::units::parse_duration(&text).map_err(|e| ToolError::refused(format!("{field} {text:?}: {e}")))?;
        Ok(text)
    }
}

/// A command: one shell command line (run by `/bin/sh -c`) or a program and its arguments.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(untagged)]
pub enum CommandArg {
    Shell(String),
    Argv(Vec<String>),
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateSandboxArgs {
    /// An image in airlock's store (`airlock image pull` / `import`, e.g. `python:3.12`) as `/`: writable for
    /// the sandbox (package managers work), the image's environment and working directory applied. Without it,
    /// `/` is the host's system directories, read-only.
    #[serde(default)]
    pub image: Option<String>,
    /// An absolute host directory shown at the same path inside, as the working directory. Copy-on-write: the
    /// sandbox's writes go to a layer (see `diff`) until `commit` applies them to the host directory.
    #[serde(default)]
    pub workspace: Option<String>,
    /// Network destinations the sandbox may reach (`example.com`, `*.pypi.org`, `host:port`). Without any, the
    /// sandbox has no network (loopback only).
    #[serde(default)]
    pub allow: Vec<String>,
    /// The sandbox's lifetime (`"30m"`, or seconds): then it and everything in it is stopped.
    #[serde(default)]
    pub timeout: Option<DurationArg>,
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RunCommandArgs {
    /// The sandbox's name (from `create_sandbox`).
    pub sandbox: String,
    /// A shell command line (run with `/bin/sh -c`), or `["program", "arg", ...]`.
    pub command: CommandArg,
    /// A limit for this command (`"30s"`, or seconds): then it is killed and `exit_code` is 124.
    #[serde(default)]
    pub timeout: Option<DurationArg>,
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct WriteFileArgs {
    /// The sandbox's name.
    pub sandbox: String,
    /// An absolute path inside the sandbox (parent directories are created).
    pub path: String,
    /// The file's new content (UTF-8 text).
    pub content: String,
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct PathArgs {
    /// The sandbox's name.
    pub sandbox: String,
    /// An absolute path inside the sandbox.
    pub path: String,
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SandboxArgs {
    /// The sandbox's name.
    pub sandbox: String,
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct CommitArgs {
    /// The sandbox's name.
    pub sandbox: String,
    /// Only the changes at or under these paths (relative to the workspace, or absolute inside it); all when
    /// absent.
    #[serde(default)]
    pub paths: Vec<String>,
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct LabelArgs {
    /// The sandbox's name.
    pub sandbox: String,
    /// The checkpoint's label: letters, digits, `.`, `_`, `-` (at most 64, not starting with `-` or `.`).
    pub label: String,
}

/// The MCP server: one per session (stdio) or per HTTP session, all sharing one backend.
#[derive(Debug, Clone)]
pub struct AirlockTools {
    backend: Arc<Backend>,
}

/// A success: the JSON as text.
fn answer(value: Value) -> CallToolResult {
    CallToolResult::success(vec![ContentBlock::text(value.to_string())])
}

/// A tool's outcome as its result: a refusal is `isError: true` with the `airlock:` sentence.
fn result(outcome: Result<Value, ToolError>) -> Result<CallToolResult, ErrorData> {
    Ok(match outcome {
        Ok(value) => answer(value),
        Err(e) => CallToolResult::error(vec![ContentBlock::text(e.sentence())]),
    })
}

fn short(text: &str) -> String {
    if text.len() <= 80 {
        return text.to_string();
    }
    let mut end = 80;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &text[..end])
}

fn check_sandbox(name: &str) -> Result<(), ToolError> {
    policy::names::validate_sandbox_name(name)
        .map_err(|_| ToolError::refused(format!("no sandbox named {}", short(name))))
}

fn check_path(path: &str) -> Result<(), ToolError> {
    if !path.starts_with('/') || path.contains('\0') || path.len() > 4096 {
        return Err(ToolError::refused(format!(
            "path {:?}: an absolute path inside the sandbox, without NUL, at most 4096 bytes",
            short(path)
        )));
    }
    Ok(())
}

fn check_label(label: &str) -> Result<(), ToolError> {
    if label.is_empty()
        || label.len() > 64
        || !label.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
        || label.starts_with(['-', '.'])
    {
        return Err(ToolError::refused(format!(
            "label {:?}: letters, digits, `.`, `_`, `-`, at most 64, not starting with `-` or `.`",
            short(label)
        )));
    }
    Ok(())
}

/// A fresh sandbox name: `mcp-` and 12 random hex digits.
fn new_name() -> Result<String, ToolError> {
    use std::io::Read;
    let mut bytes = [0u8; 6];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut bytes))
        .map_err(|e| ToolError::refused(format!("cannot read /dev/urandom for a sandbox name: {e}")))?;
    Ok(format!("mcp-{}", bytes.iter().map(|b| format!("{b:02x}")).collect::<String>()))
}

impl CreateSandboxArgs {
    fn checked(&self) -> Result<SandboxRequest, ToolError> {
        if let Some(image) = &self.image {
            // A reference, an id or a prefix of one: printable, no spaces, bounded (the store says whether it
            // exists).
            let printable = image.bytes().all(|b| b.is_ascii_graphic());
            if image.is_empty() || image.len() > 255 || !printable || image.starts_with('-') {
                return Err(ToolError::refused(format!("image {:?}: not an image reference", short(image))));
            }
        }
        if let Some(w) = &self.workspace {
            if !w.starts_with('/') {
                return Err(ToolError::refused(format!("workspace {:?}: an absolute host path", short(w))));
            }
            policy::names::validate_absolute_path(w)
                .map_err(|e| ToolError::refused(format!("workspace {:?}: {e}", short(w))))?;
            if !std::path::Path::new(w).is_dir() {
                return Err(ToolError::refused(format!("workspace {}: not a directory", short(w))));
            }
        }
        for a in &self.allow {
            policy::names::validate_allow_pattern(a)
                .map_err(|e| ToolError::refused(format!("allow {:?}: {e}", short(a))))?;
        }
        let timeout = self.timeout.as_ref().map(|t| t.checked("timeout")).transpose()?;
        Ok(SandboxRequest {
            image: self.image.clone(),
            workspace: self.workspace.clone(),
            allow: self.allow.clone(),
            timeout,
        })
    }
}

impl RunCommandArgs {
    fn argv(&self) -> Result<Vec<String>, ToolError> {
        let argv = match &self.command {
            CommandArg::Shell(line) => vec!["/bin/sh".to_string(), "-c".to_string(), line.clone()],
            CommandArg::Argv(argv) => argv.clone(),
        };
        if argv.first().is_none_or(String::is_empty) {
            return Err(ToolError::refused("command: needs at least the program"));
        }
        if argv.iter().any(|a| a.contains('\0')) || argv.iter().map(String::len).sum::<usize>() > 1 << 20 {
            return Err(ToolError::refused("command: an argument holds a NUL byte, or the command is over 1 MiB"));
        }
        Ok(argv)
    }
}

#[tool_router]
impl AirlockTools {
    pub fn new(backend: Arc<Backend>) -> AirlockTools {
        AirlockTools { backend }
    }

    #[tool(description = "Create a sandbox that stays up: an isolated Linux environment (the host's system \
                       directories read-only, or with `image` an image from airlock's store as a writable `/`; \
                       a private /tmp, no network unless `allow` names destinations). With `workspace`, that \
                       host directory appears at the same path, copy-on-write. Returns {name}.")]
    async fn create_sandbox(
        &self,
        Parameters(args): Parameters<CreateSandboxArgs>,
    ) -> Result<CallToolResult, ErrorData> {
        let outcome = async {
            let req = args.checked()?;
            let name = new_name()?;
            self.backend.create(&name, &req).await
        };
        result(outcome.await)
    }

    #[tool(description = "Run a command in a sandbox and wait for it. Returns {exit_code, stdout, stderr, timed_out, \
                       truncated}; a command that fails is a normal result with its exit code.")]
    async fn run_command(&self, Parameters(args): Parameters<RunCommandArgs>) -> Result<CallToolResult, ErrorData> {
        let outcome = async {
            check_sandbox(&args.sandbox)?;
            let argv = args.argv()?;
            let timeout = args.timeout.as_ref().map(|t| t.checked("timeout")).transpose()?;
            self.backend.exec(&args.sandbox, &argv, timeout.as_deref()).await
        };
        result(outcome.await)
    }

    #[tool(description = "Write a text file inside a sandbox (created or replaced; parent directories created).")]
    async fn write_file(&self, Parameters(args): Parameters<WriteFileArgs>) -> Result<CallToolResult, ErrorData> {
        let outcome = async {
            check_sandbox(&args.sandbox)?;
            check_path(&args.path)?;
            let bytes = args.content.len();
            self.backend.write(&args.sandbox, &args.path, args.content.into_bytes()).await?;
            Ok(json!({ "path": args.path, "bytes": bytes }))
        };
        result(outcome.await)
    }

    #[tool(
        description = "Read a file inside a sandbox. Returns {path, content} (UTF-8 text), or {path, content_base64} \
                       for a file that is not text."
    )]
    async fn read_file(&self, Parameters(args): Parameters<PathArgs>) -> Result<CallToolResult, ErrorData> {
        let outcome = async {
            check_sandbox(&args.sandbox)?;
            check_path(&args.path)?;
            match self.backend.read(&args.sandbox, &args.path).await? {
                FileAnswer::Dir(_) => {
                    Err(ToolError::refused(format!("{} is a directory (use list_files)", short(&args.path))))
                }
                FileAnswer::File(bytes) => Ok(match String::from_utf8(bytes) {
                    Ok(text) => json!({ "path": args.path, "content": text }),
                    Err(e) => json!({
                        "path": args.path,
                        "content_base64": base64::engine::general_purpose::STANDARD.encode(e.into_bytes()),
                    }),
                }),
            }
        };
        result(outcome.await)
    }

    #[tool(description = "List a directory inside a sandbox. Returns {path, entries: [{name, type, size, mode}]}.")]
    async fn list_files(&self, Parameters(args): Parameters<PathArgs>) -> Result<CallToolResult, ErrorData> {
        let outcome = async {
            check_sandbox(&args.sandbox)?;
            check_path(&args.path)?;
            match self.backend.read(&args.sandbox, &args.path).await? {
                FileAnswer::Dir(entries) => Ok(json!({ "path": args.path, "entries": entries })),
                FileAnswer::File(_) => Err(ToolError::refused(format!("{} is not a directory", short(&args.path)))),
            }
        };
        result(outcome.await)
    }

    #[tool(description = "What a sandbox changed in its copy-on-write workspace (not yet applied to the host).")]
    async fn diff(&self, Parameters(args): Parameters<SandboxArgs>) -> Result<CallToolResult, ErrorData> {
        let outcome = async {
            check_sandbox(&args.sandbox)?;
            self.backend.diff(&args.sandbox).await
        };
        result(outcome.await)
    }

    #[tool(description = "Apply a sandbox's workspace changes (all, or those under `paths`) to the host directory. \
                       Refused, applying nothing, when a host file changed since the sandbox started. Returns \
                       {committed}.")]
    async fn commit(&self, Parameters(args): Parameters<CommitArgs>) -> Result<CallToolResult, ErrorData> {
        let outcome = async {
            check_sandbox(&args.sandbox)?;
            if let Some(p) = args.paths.iter().find(|p| p.is_empty() || p.contains('\0') || p.len() > 4096) {
                return Err(ToolError::refused(format!("paths: {:?} is not a path", short(p))));
            }
            self.backend.commit(&args.sandbox, &args.paths).await
        };
        result(outcome.await)
    }

    #[tool(description = "Save a sandbox's workspace changes so far under a label, to `rollback` to later.")]
    async fn checkpoint(&self, Parameters(args): Parameters<LabelArgs>) -> Result<CallToolResult, ErrorData> {
        let outcome = async {
            check_sandbox(&args.sandbox)?;
            check_label(&args.label)?;
            self.backend.checkpoint(&args.sandbox, &args.label).await?;
            Ok(json!({ "sandbox": args.sandbox, "label": args.label }))
        };
        result(outcome.await)
    }

    #[tool(description = "Return a sandbox's workspace to what it was at a checkpoint.")]
    async fn rollback(&self, Parameters(args): Parameters<LabelArgs>) -> Result<CallToolResult, ErrorData> {
        let outcome = async {
            check_sandbox(&args.sandbox)?;
            check_label(&args.label)?;
            self.backend.rollback(&args.sandbox, &args.label).await?;
            Ok(json!({ "sandbox": args.sandbox, "label": args.label }))
        };
        result(outcome.await)
    }

    #[tool(
        description = "A sandbox's audit log: what ran in it, refused syscalls, limits hit, network decisions, file \
                       changes. Returns {records, total, truncated} (the newest 1000)."
    )]
    async fn logs(&self, Parameters(args): Parameters<SandboxArgs>) -> Result<CallToolResult, ErrorData> {
        let outcome = async {
            check_sandbox(&args.sandbox)?;
            self.backend.logs(&args.sandbox).await
        };
        result(outcome.await)
    }

    #[tool(description = "The sandboxes: name, state, workspace.")]
    async fn list_sandboxes(&self) -> Result<CallToolResult, ErrorData> {
        result(self.backend.list().await)
    }

    #[tool(description = "Stop a sandbox and remove it with everything it kept (uncommitted changes are lost).")]
    async fn destroy_sandbox(&self, Parameters(args): Parameters<SandboxArgs>) -> Result<CallToolResult, ErrorData> {
        let outcome = async {
            check_sandbox(&args.sandbox)?;
            self.backend.destroy(&args.sandbox).await?;
            Ok(json!({ "destroyed": args.sandbox }))
        };
        result(outcome.await)
    }
}

#[tool_handler(
    name = "airlock",
    instructions = "airlock sandboxes: create_sandbox, then run_command / write_file / read_file in it; with a \
                    workspace, diff and commit apply its changes to the host. destroy_sandbox when done."
)]
impl ServerHandler for AirlockTools {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_and_paths() {
        assert!(check_label("c1").is_ok());
        for bad in ["", "-x", ".x", "a/b", &"x".repeat(65)] {
            assert!(check_label(bad).is_err(), "{bad}");
        }
        assert!(check_path("/a").is_ok());
        assert!(check_path("a").is_err());
        assert!(check_sandbox("../x").is_err());
    }

    #[test]
    fn durations_and_commands() {
        assert_eq!(DurationArg::Seconds(30).checked("t").ok().as_deref(), Some("30s"));
        assert!(DurationArg::Text("soon".into()).checked("t").is_err());
        let args = |c: CommandArg| RunCommandArgs { sandbox: "s".into(), command: c, timeout: None };
        assert_eq!(
            args(CommandArg::Shell("echo hi".into())).argv().ok(),
            Some(vec!["/bin/sh".into(), "-c".into(), "echo hi".into()])
        );
        assert!(args(CommandArg::Argv(vec![])).argv().is_err());
    }

    #[test]
    fn every_tool_has_an_object_schema() {
        let tools = AirlockTools::tool_router().list_all();
        assert_eq!(tools.len(), 12);
        for t in tools {
            assert_eq!(t.input_schema.get("type").and_then(Value::as_str), Some("object"), "{}", t.name);
        }
    }
}
