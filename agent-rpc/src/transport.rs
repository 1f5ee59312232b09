//! Moving multipart messages through one tmq socket from one task.
//!
//! A ZeroMQ socket must not be used from two threads at once, and tmq's
//! sockets register a single read waker for both directions, so the sending
//! and the receiving half of a socket live in the same task: [`Pump`] keeps a
//! queue of outgoing messages and makes progress on both directions each time
//! that task is polled, so a peer that does not read never stops this side
//! from reading, and a flood of incoming messages never stops replies.

use std::collections::VecDeque;
use std::pin::Pin;
use std::sync::OnceLock;
use std::task::{Context, Poll};

use futures::{Sink, Stream};
use tmq::{AsZmqSocket, Multipart, TmqError};
use tokio::time::Instant;

/// The process-wide ZeroMQ context (one I/O thread). It is never terminated,
/// so dropping a socket never blocks on `zmq_ctx_term`.
pub(crate) fn context() -> tmq::Context {
    static CONTEXT: OnceLock<tmq::Context> = OnceLock::new();
    CONTEXT.get_or_init(tmq::Context::new).clone()
}

/// One message waiting to be sent, dropped unsent once `deadline` passes.
pub(crate) struct Outgoing {
    pub(crate) frames: Multipart,
    pub(crate) deadline: Option<Instant>,
}

/// A socket and its outgoing queue.
pub(crate) struct Pump<S> {
    socket: S,
    queue: VecDeque<Outgoing>,
    capacity: usize,
    flushing: bool,
    /// Since when a message has waited for a socket that takes none.
    stalled_since: Option<Instant>,
    side: &'static str,
}

impl<S> Pump<S>
where
    S: Sink<Multipart, Error = TmqError>
        + Stream<Item = tmq::Result<Multipart>>
        + AsZmqSocket
        + Unpin,
{
    pub(crate) fn new(socket: S, capacity: usize, side: &'static str) -> Pump<S> {
        Pump {
            socket,
            queue: VecDeque::new(),
            capacity: capacity.max(1),
            flushing: false,
            stalled_since: None,
            side,
        }
    }

    /// Queues a message; false (and the message dropped) if the queue is full.
    pub(crate) fn enqueue(&mut self, out: Outgoing) -> bool {
        if self.queue.len() >= self.capacity {
            tracing::warn!(
                side = self.side,
                "agent RPC send queue full; message dropped"
            );
            metrics::counter!("agent_rpc_send_dropped_total", "side" => self.side).increment(1);
            return false;
        }
        self.queue.push_back(out);
        true
    }

    /// Whether nothing waits to be sent.
    pub(crate) fn is_idle(&self) -> bool {
        self.queue.is_empty() && !self.flushing
    }

    /// Since when the next message has waited for the socket to take it, if
    /// it waits. A DEALER takes nothing once its connection is gone for good
    /// (libzmq does not reconnect after a protocol error, such as a peer
    /// sending a frame over the size limit) or its peer stopped reading.
    pub(crate) fn stalled_since(&self) -> Option<Instant> {
        self.stalled_since
    }

    /// Puts a fresh socket in place of a stalled one; queued messages stay.
    pub(crate) fn replace_socket(&mut self, socket: S) {
        self.socket = socket;
        self.flushing = false;
        self.stalled_since = None;
    }

    /// Restarts the stall clock (after a failed attempt to replace the socket).
    pub(crate) fn replace_stall_clock(&mut self) {
        if self.stalled_since.is_some() {
            self.stalled_since = Some(Instant::now());
        }
    }

    fn writable(&self) -> bool {
        self.socket
            .get_socket()
            .get_events()
            .is_ok_and(|e| e.contains(zmq::POLLOUT))
    }

    /// Sends as much of the queue as the socket takes now.
    ///
    /// A message is handed to tmq only when the socket can take it at once,
    /// so it never sits half-sent inside tmq, and a stall is visible here.
    /// The task is woken when the socket becomes writable because the same
    /// task polls [`poll_recv`](Self::poll_recv), which waits on the socket's
    /// file descriptor, and libzmq signals it on every event.
    pub(crate) fn poll_send(&mut self, cx: &mut Context<'_>) {
        loop {
            if self.flushing {
                match Pin::new(&mut self.socket).poll_flush(cx) {
                    Poll::Ready(Ok(())) => self.flushing = false,
                    Poll::Ready(Err(e)) => {
                        self.flushing = false;
                        tracing::warn!(side = self.side, error = %e, "agent RPC send failed");
                    }
                    Poll::Pending => return,
                }
            }
            let Some(next) = self.queue.front() else {
                self.stalled_since = None;
                return;
            };
            if next.deadline.is_some_and(|d| d <= Instant::now()) {
                self.queue.pop_front();
                continue;
            }
            if !self.writable() {
                self.stalled_since.get_or_insert_with(Instant::now);
                return;
            }
            self.stalled_since = None;
            match Pin::new(&mut self.socket).poll_ready(cx) {
                Poll::Ready(Ok(())) => {}
                Poll::Ready(Err(e)) => {
                    self.queue.pop_front();
                    tracing::warn!(side = self.side, error = %e, "agent RPC socket not ready; message dropped");
                    continue;
                }
                Poll::Pending => return,
            }
            let Some(next) = self.queue.pop_front() else {
                return;
            };
            match Pin::new(&mut self.socket).start_send(next.frames) {
                Ok(()) => self.flushing = true,
                Err(e) => {
                    tracing::warn!(side = self.side, error = %e, "agent RPC send failed");
                }
            }
        }
    }

    /// The next incoming message, if one is there.
    pub(crate) fn poll_recv(
        &mut self,
        cx: &mut Context<'_>,
    ) -> Poll<Option<tmq::Result<Multipart>>> {
        Pin::new(&mut self.socket).poll_next(cx)
    }
}

/// Copies the frames of a multipart out (they are small: a header, a body
/// within the size limit, a MAC).
pub(crate) fn frames_of(msg: Multipart) -> Vec<Vec<u8>> {
    msg.into_iter().map(|m| m.to_vec()).collect()
}

/// Builds a multipart from frames.
pub(crate) fn multipart(frames: Vec<Vec<u8>>) -> Multipart {
    Multipart::from(frames)
}
