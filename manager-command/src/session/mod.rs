//! Compute sessions: the aggregate, and the workflows that keep a session
//! and its unique name consistent.
//!
//! A session's name is unique among its owner's live sessions: it is a
//! reservation (`unique:session-name:…`, value `<access key>/<name>`)
//! claimed in the same atomic append as the enqueue and released in the
//! same append as the decision that makes the session dead (TERMINATED or
//! CANCELLED) or renames it.

pub mod activity;
pub mod aggregate;
pub mod driver;
pub mod kernel_io;
pub mod notices;
pub mod request;
pub mod rest;
pub mod scheduler;
pub mod sweeper;
pub mod view;

use manager_events::session::{Owner, SessionSpec, name_key};
use manager_events::{Problem, ProblemKind, reservation, session::NAME_SCOPE};
use uuid::Uuid;

pub use aggregate::{Kernel, Progress, Session, SessionCommand, SessionError, Started, stream_id};

use crate::handler::{Decided, Tx, Workflow};
use crate::reservation::{Reservation, ReservationCommand};

/// The reservation stream of a session name.
pub fn name_stream(access_key: &str, name: &str) -> String {
    reservation::stream_id(NAME_SCOPE, &name_key(access_key, name))
}

/// The session holding `name` among `access_key`'s live sessions, if any.
pub fn name_holder(reservation: &Reservation) -> Option<Uuid> {
    reservation
        .holder
        .as_deref()
        .and_then(|h| h.strip_prefix("session:"))
        .and_then(|id| id.parse().ok())
}

/// Enqueues a new session and claims its name, atomically.
#[derive(Debug, Clone)]
pub struct EnqueueSession {
    /// The session's id.
    pub id: Uuid,
    /// The creation token.
    pub creation_id: String,
    /// Who owns it.
    pub owner: Owner,
    /// What is asked for (validated).
    pub spec: SessionSpec,
}

impl Workflow for EnqueueSession {
    type Output = ();

    async fn run(&self, tx: &mut Tx<'_>) -> Result<(), Problem> {
        let holder = stream_id(self.id);
        tx.presume_new::<Session>(&holder);
        tx.decide::<Session>(
            &holder,
            &SessionCommand::Enqueue {
                id: self.id,
                creation_id: self.creation_id.clone(),
                owner: self.owner.clone(),
                spec: self.spec.clone(),
            },
        )
        .await?;
        tx.decide::<Reservation>(
            &name_stream(&self.owner.access_key, &self.spec.name),
            &ReservationCommand::Claim {
                holder,
                what: "session name",
            },
        )
        .await
        .map_err(|p| {
            if p.kind == ProblemKind::GenericBadRequest {
                Problem::new(ProblemKind::SessionAlreadyExists).msg(format!(
                    "a live session named {:?} already exists",
                    self.spec.name
                ))
            } else {
                p
            }
        })?;
        Ok(())
    }
}

/// Runs a command on an existing session; frees its name when the session
/// becomes dead, and moves the name when it is renamed.
#[derive(Debug, Clone)]
pub struct ActOnSession {
    /// The session.
    pub id: Uuid,
    /// The command.
    pub command: SessionCommand,
}

impl Workflow for ActOnSession {
    type Output = Decided<Session>;

    async fn run(&self, tx: &mut Tx<'_>) -> Result<Decided<Session>, Problem> {
        let id = stream_id(self.id);
        let before = tx.load::<Session>(&id).await?;
        let decided = tx.decide::<Session>(&id, &self.command).await?;
        let owner = &before.owner.access_key;
        if !before.status.is_dead() && decided.state.status.is_dead() {
            tx.decide::<Reservation>(
                &name_stream(owner, &before.spec.name),
                &ReservationCommand::Release { holder: id.clone() },
            )
            .await?;
        }
        if let SessionCommand::Rename { name } = &self.command
            && *name != before.spec.name
        {
            tx.decide::<Reservation>(
                &name_stream(owner, name),
                &ReservationCommand::Claim {
                    holder: id.clone(),
                    what: "session name",
                },
            )
            .await?;
            tx.decide::<Reservation>(
                &name_stream(owner, &before.spec.name),
                &ReservationCommand::Release { holder: id.clone() },
            )
            .await?;
        }
        Ok(decided)
    }
}

/// Settings of [`SessionServices`].
#[derive(Debug, Clone)]
pub struct SessionServicesConfig {
    /// The scheduler's settings.
    pub scheduler: scheduler::SchedulerConfig,
    /// The driver's settings.
    pub driver: driver::DriverConfig,
    /// Where sessions' last accesses are kept (for idle timeouts); `None`:
    /// no idle timeouts.
    pub activity: Option<activity::Activity>,
}

/// The session side of a running manager: the view (following the log),
/// the scheduler (competing for its lock) and the driver (acting while
/// this manager is the scheduler), stopped together.
pub struct SessionServices {
    view: view::SessionView,
    stop: tokio::sync::watch::Sender<bool>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl std::fmt::Debug for SessionServices {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SessionServices").finish_non_exhaustive()
    }
}

impl SessionServices {
    /// Starts everything over `handler`'s store, calling agents through
    /// `clients`.
    pub fn start(
        handler: crate::handler::CommandHandler,
        clients: crate::agent::AgentClients,
        config: SessionServicesConfig,
    ) -> SessionServices {
        describe_metrics();
        let (stop, stopped) = tokio::sync::watch::channel(false);
        let view = view::SessionView::new();
        let scheduler = scheduler::Scheduler::new(handler.clone(), view.clone(), config.scheduler);
        let leadership = scheduler.leadership();
        let driver = driver::Driver::new(handler.clone(), view.clone(), clients, config.driver)
            .with_activity(config.activity);
        let tasks = vec![
            tokio::spawn(
                view.clone()
                    .follow(handler.store().clone(), stopped.clone()),
            ),
            tokio::spawn(scheduler.run(stopped.clone())),
            tokio::spawn(driver.run(leadership, stopped)),
        ];
        SessionServices { view, stop, tasks }
    }

    /// The scheduler's view of the log.
    pub fn view(&self) -> &view::SessionView {
        &self.view
    }

    /// Stops everything; the scheduler releases its lock.
    pub async fn stop(self) {
        let _ = self.stop.send(true);
        for task in self.tasks {
            if let Err(e) = task.await {
                tracing::warn!(error = %e, "a session service task failed");
            }
        }
    }
}

fn describe_metrics() {
    use metrics::{Unit, describe_counter, describe_gauge, describe_histogram};
    describe_gauge!(
        "scheduler_leader",
        "1 on the manager whose scheduler acts (holds the lock), else 0."
    );
    describe_histogram!(
        "scheduler_round_seconds",
        Unit::Seconds,
        "One scheduling round: plan every scaling group, append the placements."
    );
    describe_counter!("scheduler_placements_total", "Sessions placed on agents.");
    describe_counter!(
        "scheduler_conflicts_total",
        "Placements that lost to a concurrent writer and were planned again."
    );
    describe_counter!(
        "sessions_enqueued_total",
        "Sessions enqueued through the API."
    );
    for counter in [
        "scheduler_placements_total",
        "scheduler_conflicts_total",
        "sessions_enqueued_total",
    ] {
        metrics::counter!(counter).increment(0);
    }
    metrics::gauge!("scheduler_leader").set(0.0);
}
