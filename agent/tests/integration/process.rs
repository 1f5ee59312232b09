//! The process backend: real processes, over real RPC, with real Redis.

use std::collections::BTreeMap;
use std::time::Duration;

use agent::Fleet;
use agent::config::BackendKind;
use agent_rpc::agent::SyncKernelRegistryRequest;
use agent_rpc::execute::{ExecuteMode, ExecuteRequest, ExecuteResult, ExecuteStatus};
use agent_rpc::kernel::{
    DestroyKernelRequest, GetLogsRequest, InterruptKernelRequest, RestartKernelRequest,
};
use agent_rpc::notice::NoticeBody;
use agent_rpc::{Client, RemoteError, RpcError};
use uuid::Uuid;

use crate::common::*;

fn exec(
    session_id: Uuid,
    kernel_id: Uuid,
    run_id: &str,
    mode: ExecuteMode,
    code: &str,
) -> ExecuteRequest {
    ExecuteRequest {
        idempotency_key: Uuid::new_v4().to_string(),
        session_id,
        kernel_id,
        api_version: 8,
        run_id: run_id.into(),
        mode,
        code: code.into(),
        options: BTreeMap::new(),
        flush_timeout_ms: None,
    }
}

fn output(result: &ExecuteResult, stream: &str) -> String {
    result
        .console
        .iter()
        .filter(|c| c.stream == stream)
        .map(|c| c.data.as_str())
        .collect()
}

fn destroy(session_id: Uuid, kernel_id: Uuid) -> DestroyKernelRequest {
    DestroyKernelRequest {
        idempotency_key: Uuid::new_v4().to_string(),
        kernel_id,
        session_id,
        reason: String::new(),
        suppress_events: false,
    }
}

async fn start() -> (Fleet, Client, TempDir, String) {
    let scratch = TempDir::new();
    let config = config(BackendKind::Process, &scratch);
    let prefix = config.redis.key_prefix.clone();
    let fleet = Fleet::start(config).await.unwrap();
    let client = client(&fleet.endpoints()[0]);
    (fleet, client, scratch, prefix)
}

#[tokio::test]
async fn kernels_run_shell_and_python_code_and_keep_their_logs() {
    let (fleet, client, _scratch, prefix) = start().await;
    let redis = redis().await;
    let session = Uuid::new_v4();
    let sh = kernel(
        "cr.backend.ai/stable/sh:latest",
        &[("cpu", "1"), ("mem", "1g")],
    );
    let py = kernel("cr.backend.ai/stable/python:3.11", &[("cpu", "1")]);
    let (sh_id, py_id) = (sh.kernel_id, py.kernel_id);
    let created = client
        .create_kernels(create(session, vec![sh, py]))
        .await
        .unwrap();
    assert_eq!(created.kernels.len(), 2);
    assert_eq!(created.kernels[0].kernel_id, sh_id);
    assert_eq!(created.kernels[0].agent_addr, fleet.agents()[0].addr());
    assert_eq!(fleet.agents()[0].allocated_slots()["cpu"], "2");

    let r = client
        .execute(exec(
            session,
            sh_id,
            "r1",
            ExecuteMode::Query,
            "echo hi; echo err >&2; exit 4",
        ))
        .await
        .unwrap();
    assert_eq!(r.status, ExecuteStatus::Finished);
    assert_eq!(r.exit_code, Some(4));
    assert_eq!(output(&r, "stdout"), "hi\n");
    assert_eq!(output(&r, "stderr"), "err\n");

    let r = client
        .execute(exec(
            session,
            py_id,
            "r2",
            ExecuteMode::Query,
            "import sys\nprint(6 * 7)\nprint('é', file=sys.stderr)",
        ))
        .await
        .unwrap();
    assert_eq!((r.status, r.exit_code), (ExecuteStatus::Finished, Some(0)));
    assert_eq!(output(&r, "stdout"), "42\n");
    assert_eq!(output(&r, "stderr"), "é\n");

    // Code runs in the kernel's own directory, with its environment.
    let r = client
        .execute(exec(
            session,
            sh_id,
            "r3",
            ExecuteMode::Query,
            "pwd; echo $BACKENDAI_KERNEL_ID",
        ))
        .await
        .unwrap();
    let expected_dir = fleet.config().process.scratch_dir.join(sh_id.to_string());
    assert_eq!(
        output(&r, "stdout"),
        format!("{}\n{sh_id}\n", expected_dir.display())
    );

    let logs = client
        .get_logs(GetLogsRequest { kernel_id: sh_id })
        .await
        .unwrap()
        .logs;
    assert!(logs.contains("hi\n") && logs.contains("err\n"), "{logs:?}");
    let logs = client
        .get_logs(GetLogsRequest { kernel_id: py_id })
        .await
        .unwrap()
        .logs;
    assert!(logs.contains("42\n"), "{logs:?}");

    // The lifecycle went out on the stream, in order.
    let started = wait_notice(&redis, &prefix, "kernel_started", |n| {
        is_kernel(n, "kernel_started", py_id)
    })
    .await;
    let NoticeBody::KernelStarted { creation_info, .. } = started.body else {
        unreachable!()
    };
    assert_eq!(
        creation_info.unwrap().container_id,
        created.kernels[1].container_id
    );
    let all = notices(&redis, &prefix).await;
    let order: Vec<&str> = all
        .iter()
        .filter_map(|n| match &n.body {
            NoticeBody::KernelPreparing { kernel_id, .. } if *kernel_id == sh_id => {
                Some("preparing")
            }
            NoticeBody::KernelCreating { kernel_id, .. } if *kernel_id == sh_id => Some("creating"),
            NoticeBody::KernelStarted { kernel_id, .. } if *kernel_id == sh_id => Some("started"),
            _ => None,
        })
        .collect();
    assert_eq!(order, ["preparing", "creating", "started"]);

    // Restarting makes a new main process in the same directory.
    let old_pid: i32 = created.kernels[0].container_id.parse().unwrap();
    let restarted = client
        .restart_kernel(RestartKernelRequest {
            idempotency_key: Uuid::new_v4().to_string(),
            session_id: session,
            kernel_id: sh_id,
            updated_config: None,
        })
        .await
        .unwrap();
    let new_pid: i32 = restarted.container_id.parse().unwrap();
    assert_ne!(new_pid, old_pid);
    eventually(
        Duration::from_secs(5),
        "the old main process is gone",
        || async { pid_gone(old_pid) },
    )
    .await;
    assert!(!pid_gone(new_pid));
    let r = client
        .execute(exec(session, sh_id, "r4", ExecuteMode::Query, "echo again"))
        .await
        .unwrap();
    assert_eq!(output(&r, "stdout"), "again\n");

    fleet.shutdown().await;
    assert!(pid_gone(new_pid), "shutdown destroys the kernels");
    cleanup(&redis, &prefix).await;
}

#[tokio::test]
async fn interrupting_stops_a_long_execution() {
    let (fleet, client, _scratch, prefix) = start().await;
    let session = Uuid::new_v4();
    let sh = kernel("sh", &[("cpu", "1")]);
    let py = kernel("python", &[("cpu", "1")]);
    let (sh_id, py_id) = (sh.kernel_id, py.kernel_id);
    client
        .create_kernels(create(session, vec![sh, py]))
        .await
        .unwrap();

    for (kernel_id, code) in [
        (sh_id, "echo start; sleep 30; echo never"),
        (
            py_id,
            "import time\nprint('start', flush=True)\ntime.sleep(30)\nprint('never')",
        ),
    ] {
        let mut first = exec(session, kernel_id, "long", ExecuteMode::Query, code);
        first.flush_timeout_ms = Some(1500);
        let r = client.execute(first).await.unwrap();
        assert_eq!(r.status, ExecuteStatus::Continued);
        assert_eq!(output(&r, "stdout"), "start\n");

        let began = std::time::Instant::now();
        client
            .interrupt_kernel(InterruptKernelRequest {
                idempotency_key: Uuid::new_v4().to_string(),
                session_id: session,
                kernel_id,
            })
            .await
            .unwrap();
        let r = client
            .execute(exec(session, kernel_id, "long", ExecuteMode::Continue, ""))
            .await
            .unwrap();
        assert_eq!(r.status, ExecuteStatus::Finished, "{r:?}");
        assert!(began.elapsed() < Duration::from_secs(5));
        assert_ne!(r.exit_code, Some(0));
        assert!(!output(&r, "stdout").contains("never"));
        if kernel_id == py_id {
            assert!(output(&r, "stderr").contains("KeyboardInterrupt"), "{r:?}");
        }
    }
    // The kernels survive the interruption.
    let r = client
        .execute(exec(
            session,
            sh_id,
            "after",
            ExecuteMode::Query,
            "echo alive",
        ))
        .await
        .unwrap();
    assert_eq!(output(&r, "stdout"), "alive\n");

    // A run waiting for input gets it.
    let mut ask = exec(
        session,
        sh_id,
        "ask",
        ExecuteMode::Query,
        "read x; echo got $x",
    );
    ask.flush_timeout_ms = Some(300);
    assert_eq!(
        client.execute(ask).await.unwrap().status,
        ExecuteStatus::Continued
    );
    let r = client
        .execute(exec(session, sh_id, "ask", ExecuteMode::Input, "hello"))
        .await
        .unwrap();
    assert_eq!(output(&r, "stdout"), "got hello\n");

    fleet.shutdown().await;
    cleanup(&redis().await, &prefix).await;
}

#[tokio::test]
async fn destroying_a_kernel_kills_its_whole_process_tree() {
    let (fleet, client, scratch, prefix) = start().await;
    let redis = redis().await;
    let session = Uuid::new_v4();
    let k = kernel("sh", &[("cpu", "1")]);
    let kernel_id = k.kernel_id;
    let created = client
        .create_kernels(create(session, vec![k]))
        .await
        .unwrap();
    let main_pid: i32 = created.kernels[0].container_id.parse().unwrap();
    let workdir = scratch.0.join(kernel_id.to_string());
    assert!(workdir.is_dir());

    // An execution leaves a process behind, and one that ignores SIGTERM.
    let r = client
        .execute(exec(
            session,
            kernel_id,
            "bg",
            ExecuteMode::Query,
            "sleep 300 & echo $!; sh -c 'trap \"\" TERM; sleep 300' & echo $!",
        ))
        .await
        .unwrap();
    assert_eq!(r.status, ExecuteStatus::Finished);
    let left: Vec<i32> = output(&r, "stdout")
        .lines()
        .map(|l| l.parse().unwrap())
        .collect();
    assert_eq!(left.len(), 2);
    for pid in left.iter().chain([&main_pid]) {
        assert!(!pid_gone(*pid), "{pid} runs");
    }

    let began = std::time::Instant::now();
    let answer = client
        .destroy_kernel(destroy(session, kernel_id))
        .await
        .unwrap();
    assert_eq!(answer.exit_code, Some(143), "sleep dies of SIGTERM");
    assert!(!answer.already_terminated);
    for pid in left.iter().chain([&main_pid]) {
        assert!(pid_gone(*pid), "{pid} is gone");
    }
    // The one ignoring SIGTERM took the grace, then SIGKILL.
    assert!(began.elapsed() >= Duration::from_millis(900));
    assert!(!workdir.exists(), "its directory is removed");
    assert!(fleet.agents()[0].allocated_slots().is_empty());

    let n = wait_notice(&redis, &prefix, "kernel_terminated", |n| {
        is_kernel(n, "kernel_terminated", kernel_id)
    })
    .await;
    let NoticeBody::KernelTerminated {
        reason, exit_code, ..
    } = n.body
    else {
        unreachable!()
    };
    assert_eq!((reason.as_str(), exit_code), ("user-requested", Some(143)));

    // Destroying it again is harmless.
    let again = client
        .destroy_kernel(destroy(session, kernel_id))
        .await
        .unwrap();
    assert!(again.already_terminated);
    let err = client
        .execute(exec(session, kernel_id, "x", ExecuteMode::Query, "true"))
        .await
        .unwrap_err();
    assert!(
        matches!(err, RpcError::Remote(RemoteError::NotFound { .. })),
        "{err:?}"
    );

    fleet.shutdown().await;
    cleanup(&redis, &prefix).await;
}

#[tokio::test]
async fn a_kernel_exiting_by_itself_is_reported_with_its_exit_code() {
    let (fleet, client, _scratch, prefix) = start().await;
    let redis = redis().await;
    let session = Uuid::new_v4();
    let mut k = kernel("sh", &[("cpu", "1")]);
    k.startup_command = Some("echo booting; sleep 0.3; exit 7".into());
    let kernel_id = k.kernel_id;
    client
        .create_kernels(create(session, vec![k]))
        .await
        .unwrap();

    let n = wait_notice(&redis, &prefix, "self-terminated", |n| {
        is_kernel(n, "kernel_terminated", kernel_id)
    })
    .await;
    let NoticeBody::KernelTerminated {
        reason,
        exit_code,
        session_id,
        ..
    } = n.body
    else {
        unreachable!()
    };
    assert_eq!(
        (reason.as_str(), exit_code, session_id),
        ("self-terminated", Some(7), session)
    );
    let all = notices(&redis, &prefix).await;
    let started = all
        .iter()
        .position(|n| is_kernel(n, "kernel_started", kernel_id))
        .unwrap();
    let ended = all
        .iter()
        .position(|n| is_kernel(n, "kernel_terminated", kernel_id))
        .unwrap();
    assert!(started < ended);

    // The agent forgot it and gave its slots back.
    assert_eq!(fleet.agents()[0].kernel_count(), 0);
    assert!(fleet.agents()[0].allocated_slots().is_empty());
    let sync = client
        .sync_kernel_registry(SyncKernelRegistryRequest::default())
        .await
        .unwrap();
    assert!(sync.running.is_empty());

    fleet.shutdown().await;
    cleanup(&redis, &prefix).await;
}

#[tokio::test]
async fn the_same_create_call_twice_starts_one_process() {
    let (fleet, client, scratch, prefix) = start().await;
    let session = Uuid::new_v4();
    let k = kernel("sh", &[("cpu", "1")]);
    let kernel_id = k.kernel_id;
    let request = create(session, vec![k]);

    let (a, b) = tokio::join!(
        client.create_kernels(request.clone()),
        client.create_kernels(request.clone())
    );
    let (a, b) = (a.unwrap(), b.unwrap());
    assert_eq!(a, b);
    let c = client.create_kernels(request.clone()).await.unwrap();
    assert_eq!(a, c);
    // Even with another key (say, after the agent's cache forgot), the
    // registry answers with the kernel that runs.
    let mut other = request.clone();
    other.idempotency_key = Uuid::new_v4().to_string();
    let d = client.create_kernels(other).await.unwrap();
    assert_eq!(a, d);

    let workdir = scratch.0.join(kernel_id.to_string());
    let pids = processes_in(&workdir);
    assert_eq!(
        pids,
        vec![a.kernels[0].container_id.parse::<i32>().unwrap()]
    );
    assert_eq!(fleet.agents()[0].kernel_count(), 1);
    assert_eq!(fleet.agents()[0].allocated_slots()["cpu"], "1");

    // The same kernel id in another session is refused.
    let mut foreign = request;
    foreign.session_id = Uuid::new_v4();
    foreign.idempotency_key = Uuid::new_v4().to_string();
    let err = client.create_kernels(foreign).await.unwrap_err();
    assert!(
        matches!(err, RpcError::Remote(RemoteError::AlreadyExists { .. })),
        "{err:?}"
    );

    fleet.shutdown().await;
    cleanup(&redis().await, &prefix).await;
}
