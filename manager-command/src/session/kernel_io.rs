//! Talking to a session's main kernel for its user, through its agent:
//!
//! - `GET /session/{name}/logs`: the main kernel's log (`get_logs`);
//! - `POST /session/{name}`: run code (`execute`), one call per request;
//! - `GET /stream/session/{name}/execute`: the WebSocket `backend.ai run`
//!   uses — one text frame with the code, then result frames until the run
//!   is `finished` (input lines answered while it waits for input).
//!
//! Nothing here is appended to the log: code runs and logs are the
//! kernel's business, not the cluster's state.

use std::collections::BTreeMap;
use std::sync::Arc;

use actix_web::web::{self, Bytes};
use actix_web::{HttpRequest, HttpResponse};
use agent_rpc::execute::{ExecuteMode, ExecuteRequest, ExecuteResult, ExecuteStatus};
use agent_rpc::kernel::GetLogsRequest;
use futures::StreamExt;
use manager_events::auth::AuthContext;
use manager_events::session::KernelStatus;
use manager_events::{Problem, ProblemKind};
use serde_json::{Value, json};
use uuid::Uuid;

use super::Session;
use super::request::Errors;
use super::rest::SessionApi;
use crate::agent::AgentClients;

/// What the kernel endpoints need besides the session endpoints.
#[derive(Clone)]
pub struct KernelIo {
    api: Arc<SessionApi>,
    clients: AgentClients,
    activity: Option<super::activity::Activity>,
}

impl std::fmt::Debug for KernelIo {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KernelIo").finish_non_exhaustive()
    }
}

impl KernelIo {
    /// Over the session endpoints' lookups, calling agents through `clients`.
    pub fn new(api: Arc<SessionApi>, clients: AgentClients) -> Self {
        KernelIo {
            api,
            clients,
            activity: None,
        }
    }

    /// Records each execution as the session's last access (idle timeouts).
    pub fn with_activity(mut self, activity: Option<super::activity::Activity>) -> Self {
        self.activity = activity;
        self
    }
}

/// Mounts the endpoints (the execute `POST` only: a `GET` of the same path
/// is the read side's).
pub fn configure(cfg: &mut web::ServiceConfig) {
    use actix_web::guard;
    cfg.service(
        web::resource("/session/{name}/logs")
            .guard(guard::Get())
            .route(web::get().to(logs)),
    )
    .service(
        web::resource("/session/{name}")
            .guard(guard::Post())
            .route(web::post().to(execute)),
    )
    .service(
        web::resource("/stream/session/{name}/execute")
            .guard(guard::Get())
            .route(web::get().to(stream_execute)),
    );
}

fn agent_error(e: impl std::fmt::Display) -> Problem {
    Problem::new(ProblemKind::ServiceUnavailable).msg(format!("the kernel's agent: {e}"))
}

/// The main kernel's agent and id, when it runs.
fn main_kernel(s: &Session) -> Option<(String, Uuid)> {
    let k = s.main_kernel()?;
    (k.status == KernelStatus::Running)
        .then(|| k.agent_id.clone().map(|a| (a, k.id)))
        .flatten()
}

/// The result object as the client reads it.
pub fn result_json(r: &ExecuteResult) -> Value {
    let status = match r.status {
        ExecuteStatus::Finished => "finished",
        ExecuteStatus::Continued => "continued",
        ExecuteStatus::WaitingInput => "waiting-input",
        ExecuteStatus::BuildFinished => "build-finished",
        ExecuteStatus::CleanFinished => "clean-finished",
        ExecuteStatus::ExecTimeout => "exec-timeout",
    };
    let console: Vec<Value> = r
        .console
        .iter()
        .map(|c| json!([c.stream, c.data]))
        .collect();
    let files: Vec<Value> = r
        .files
        .iter()
        .map(|f| json!({"name": f, "url": Value::Null}))
        .collect();
    let options: serde_json::Map<String, Value> = r
        .options
        .iter()
        .map(|(k, v)| {
            let v = match v.as_str() {
                "true" => Value::Bool(true),
                "false" => Value::Bool(false),
                _ => Value::String(v.clone()),
            };
            (k.clone(), v)
        })
        .collect();
    json!({
        "status": status,
        "runId": r.run_id,
        "exitCode": r.exit_code,
        "options": options,
        "files": files,
        "console": console,
    })
}

/// The answer for a kernel that is gone (the reference's).
fn gone(run_id: &str) -> Value {
    json!({"status": "finished", "runId": run_id, "exitCode": 130,
           "options": {}, "files": [], "console": []})
}

impl KernelIo {
    async fn session(
        &self,
        actor: &AuthContext,
        owner: Option<&str>,
        reference: &str,
    ) -> Result<(Uuid, Session), Problem> {
        let acting = self.api.acting_for(actor, owner).await?;
        self.api.find_live(&acting, reference).await
    }

    async fn run(
        &self,
        session: Uuid,
        s: &Session,
        mode: ExecuteMode,
        run_id: &str,
        code: String,
        options: BTreeMap<String, String>,
    ) -> Result<Value, Problem> {
        let Some((agent, kernel)) = main_kernel(s) else {
            return Ok(gone(run_id));
        };
        if let Some(activity) = &self.activity {
            activity.touch(session).await;
        }
        let client = self.clients.get(&agent).map_err(agent_error)?;
        let request = ExecuteRequest {
            idempotency_key: Uuid::new_v4().to_string(),
            session_id: session,
            kernel_id: kernel,
            api_version: 8,
            run_id: run_id.to_owned(),
            mode,
            code,
            options,
            flush_timeout_ms: None,
        };
        match client.execute(request).await {
            Ok(r) => Ok(result_json(&r)),
            Err(agent_rpc::RpcError::Remote(e)) if e.to_string().contains("not found") => {
                Ok(gone(run_id))
            }
            Err(e) => Err(agent_error(e)),
        }
    }
}

async fn logs(
    io: web::Data<KernelIo>,
    actor: AuthContext,
    req: HttpRequest,
    path: web::Path<String>,
) -> Result<HttpResponse, Problem> {
    let q = web::Query::<Vec<(String, String)>>::from_query(req.query_string())
        .map_err(|_| Problem::new(ProblemKind::InvalidApiParams).msg("Malformed query"))?;
    let mut errors = Errors::default();
    let mut owner = None;
    for (k, v) in q.iter() {
        match k.as_str() {
            "owner_access_key" => owner = Some(v.clone()),
            other => errors.add(other, "unknown key"),
        }
    }
    errors.into_result()?;
    let (_, s) = io.session(&actor, owner.as_deref(), &path).await?;
    let Some((agent, kernel)) = main_kernel(&s) else {
        return Ok(HttpResponse::Ok().json(json!({"result": {"logs": ""}})));
    };
    let client = io.clients.get(&agent).map_err(agent_error)?;
    let answer = client
        .get_logs(GetLogsRequest { kernel_id: kernel })
        .await
        .map_err(agent_error)?;
    Ok(HttpResponse::Ok().json(json!({"result": {"logs": answer.logs}})))
}

fn mode_of(text: &str) -> Option<ExecuteMode> {
    Some(match text {
        "query" => ExecuteMode::Query,
        "batch" => ExecuteMode::Batch,
        "continue" => ExecuteMode::Continue,
        "input" => ExecuteMode::Input,
        _ => return None,
    })
}

fn options_of(v: Option<&Value>) -> BTreeMap<String, String> {
    v.and_then(Value::as_object)
        .map(|m| {
            m.iter()
                .filter(|(_, v)| !v.is_null())
                .map(|(k, v)| {
                    let text = v.as_str().map_or_else(|| v.to_string(), str::to_owned);
                    (k.clone(), text)
                })
                .collect()
        })
        .unwrap_or_default()
}

async fn execute(
    io: web::Data<KernelIo>,
    actor: AuthContext,
    path: web::Path<String>,
    body: Bytes,
) -> Result<HttpResponse, Problem> {
    let Ok(Value::Object(body)) = serde_json::from_slice::<Value>(&body) else {
        return Err(Problem::new(ProblemKind::InvalidApiParams).msg("Malformed body"));
    };
    let mut errors = Errors::default();
    let mode_text = body.get("mode").and_then(Value::as_str).unwrap_or_default();
    if !body.contains_key("runId") {
        errors.add("runId", "is required (null on a run's first call)");
    }
    let run_id = body.get("runId").and_then(Value::as_str).map(str::to_owned);
    let code = match body.get("code") {
        None | Some(Value::Null) => String::new(),
        Some(Value::String(c)) => c.clone(),
        Some(_) => {
            errors.add("code", "must be a string");
            String::new()
        }
    };
    let mode = if mode_text == "complete" {
        None
    } else {
        match mode_of(mode_text) {
            Some(m) => Some(m),
            None => {
                errors.add("mode", "must be query, batch, complete, continue or input");
                None
            }
        }
    };
    if matches!(mode, Some(ExecuteMode::Continue | ExecuteMode::Input)) && run_id.is_none() {
        errors.add("runId", "is required to continue a run");
    }
    errors.into_result()?;
    let (id, s) = io.session(&actor, None, &path).await?;
    let Some(mode) = mode else {
        // Completion: no kernel runtime here offers it.
        return Ok(HttpResponse::Ok().json(json!({"result": []})));
    };
    let run_id = run_id.unwrap_or_else(|| Uuid::new_v4().simple().to_string());
    let result = io
        .run(id, &s, mode, &run_id, code, options_of(body.get("options")))
        .await?;
    Ok(HttpResponse::Ok().json(json!({ "result": result })))
}

async fn stream_execute(
    io: web::Data<KernelIo>,
    actor: AuthContext,
    req: HttpRequest,
    path: web::Path<String>,
    payload: web::Payload,
) -> Result<HttpResponse, Problem> {
    let (id, s) = io.session(&actor, None, &path).await?;
    let (response, mut ws, mut frames) = actix_ws::handle(&req, payload)
        .map_err(|e| Problem::new(ProblemKind::InvalidApiParams).msg(e.to_string()))?;
    let io = io.into_inner();
    actix_web::rt::spawn(async move {
        let mut run_id = Uuid::new_v4().simple().to_string();
        let mut waiting_input = false;
        while let Some(Ok(frame)) = frames.next().await {
            let text = match frame {
                actix_ws::Message::Text(t) => t.to_string(),
                actix_ws::Message::Ping(b) => {
                    if ws.pong(&b).await.is_err() {
                        return;
                    }
                    continue;
                }
                actix_ws::Message::Close(_) => break,
                _ => continue,
            };
            let (mut mode, mut code, options) = if waiting_input {
                (ExecuteMode::Input, text, BTreeMap::new())
            } else {
                let parsed: Value = serde_json::from_str(&text).unwrap_or(Value::Null);
                run_id = Uuid::new_v4().simple().to_string();
                (
                    parsed
                        .get("mode")
                        .and_then(Value::as_str)
                        .and_then(mode_of)
                        .unwrap_or(ExecuteMode::Query),
                    parsed
                        .get("code")
                        .and_then(Value::as_str)
                        .unwrap_or_default()
                        .to_owned(),
                    options_of(parsed.get("options")),
                )
            };
            loop {
                let result = match io.run(id, &s, mode, &run_id, code, options.clone()).await {
                    Ok(r) => r,
                    Err(p) => {
                        let _ = ws.text(p.body().to_string()).await;
                        let _ = ws.close(None).await;
                        return;
                    }
                };
                let status = result["status"].as_str().unwrap_or("finished").to_owned();
                if ws.text(result.to_string()).await.is_err() {
                    return;
                }
                match status.as_str() {
                    "continued" | "build-finished" | "clean-finished" => {
                        mode = ExecuteMode::Continue;
                        code = String::new();
                    }
                    "waiting-input" => {
                        waiting_input = true;
                        break;
                    }
                    _ => {
                        waiting_input = false;
                        break;
                    }
                }
            }
        }
        let _ = ws.close(None).await;
    });
    Ok(response)
}
