//! Blob bytes sent from the page cache to the socket (`sendfile`) on plain-HTTP
//! connections.
//!
//! actix writes every response body through its own buffer: a blob read into memory is
//! copied into that buffer and again into the socket, where nginx copies nothing. Each
//! plain-HTTP connection is therefore a [`FileConn`], which holds a [`SendSlot`] (its
//! connection data, `HttpRequest::conn_data`). A handler that has a local blob's file
//! puts it in the slot and answers with a [`FileBody`], a body of no bytes of its own
//! that ends once the connection has sent the file.
//!
//! Order on the wire: actix encodes the response head into its buffer, then polls the
//! body, which arms the slot and waits. actix flushes the connection only after writing
//! the whole of its buffer to it, so the head (and anything before it) is on the socket
//! when [`FileConn`]'s flush sends the file; nothing is encoded after the head while
//! the body waits. A connection whose file could not be sent in full is broken for good:
//! its next write fails, and actix closes it, so no client reads a short body followed
//! by the next response.

use std::cell::RefCell;
use std::fs::File;
use std::io;
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context, Poll, Waker};

use actix_web::body::{BodySize, MessageBody};
use bytes::Bytes;
use tokio::io::{AsyncRead, AsyncWrite, Interest, ReadBuf};
use tokio::net::TcpStream;

/// Bytes asked of one `sendfile` call.
const SEND_CALL: usize = 1024 * 1024;
/// Bytes sent in one flush before the connection lets its worker serve others: a large
/// blob on a fast client must not hold the thread to itself.
const SEND_TURN: u64 = 8 * 1024 * 1024;

/// A file range waiting to be sent, or being sent.
struct Job {
    file: File,
    offset: u64,
    left: u64,
}

#[derive(Default)]
struct Shared {
    job: Option<Job>,
    /// What became of the last job, until its body takes it.
    outcome: Option<io::Result<()>>,
    /// The body waiting for the outcome.
    waiting: Option<Waker>,
    /// Bytes sent by jobs since the response metrics last took them.
    sent: u64,
    /// A job failed or was abandoned part way: the stream is no longer HTTP.
    broken: bool,
}

/// A connection's slot for a file to send after the response head.
#[derive(Clone, Default)]
pub struct SendSlot(Rc<RefCell<Shared>>);

impl SendSlot {
    /// The bytes this connection sent from files since the last call: the response
    /// metrics count them with the body's own.
    pub fn take_sent(&self) -> u64 {
        std::mem::take(&mut self.0.borrow_mut().sent)
    }
}

/// A plain-HTTP connection that can send a file after a response head.
pub struct FileConn {
    io: TcpStream,
    slot: SendSlot,
}

impl FileConn {
    pub fn new(io: TcpStream) -> Self {
        FileConn {
            io,
            slot: SendSlot::default(),
        }
    }

    /// The slot handlers of this connection's requests find in its connection data.
    pub fn slot(&self) -> SendSlot {
        self.slot.clone()
    }

    /// Sends the armed job, if any, until done or the socket is full. On an error the
    /// connection is broken and the body is told.
    fn poll_send(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let mut guard = self.slot.0.borrow_mut();
        let shared = &mut *guard;
        let Some(job) = shared.job.as_mut() else {
            return Poll::Ready(Ok(()));
        };
        let mut turn = 0u64;
        let result = loop {
            if job.left == 0 {
                break Ok(());
            }
            if turn >= SEND_TURN {
                cx.waker().wake_by_ref();
                return Poll::Pending;
            }
            let want = job.left.min(SEND_CALL as u64) as usize;
            let sent = poll_write_with(&self.io, cx, || {
                rustix::fs::sendfile(&self.io, &job.file, Some(&mut job.offset), want)
            });
            match std::task::ready!(sent) {
                Ok(0) => {
                    break Err(io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        "blob file shorter than its size",
                    ))
                }
                Ok(n) => {
                    job.left -= n as u64;
                    turn += n as u64;
                    shared.sent += n as u64;
                }
                Err(e) => break Err(e),
            }
        };
        shared.job = None;
        // The body gets its own copy of an error; actix gets this one and closes.
        let failed = result
            .as_ref()
            .err()
            .map(|e| io::Error::new(e.kind(), e.to_string()));
        shared.broken |= failed.is_some();
        shared.outcome = Some(result);
        if let Some(waker) = shared.waiting.take() {
            waker.wake();
        }
        match failed {
            Some(e) => Poll::Ready(Err(e)),
            None => Poll::Ready(Ok(())),
        }
    }
}

impl AsyncRead for FileConn {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_read(cx, buf)
    }
}

impl AsyncWrite for FileConn {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let (broken_conn, file_follows) = {
            let shared = self.slot.0.borrow();
            (shared.broken, shared.job.is_some())
        };
        if broken_conn {
            return Poll::Ready(Err(broken()));
        }
        if !file_follows {
            return Pin::new(&mut self.io).poll_write(cx, buf);
        }
        // A head with its file to follow: held back (`MSG_MORE`) to leave in the same
        // packets as the file's first bytes, as nginx's `tcp_nopush` does, rather than
        // alone, which would wake the client once more per response.
        poll_write_with(&self.io, cx, || {
            rustix::net::send(&self.io, buf, rustix::net::SendFlags::MORE)
        })
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        std::task::ready!(self.poll_send(cx))?;
        Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }
}

/// `write` (a system call writing to `io`) once the socket takes it: `Pending` while it
/// is full, retried when a signal interrupted it.
fn poll_write_with(
    io: &TcpStream,
    cx: &mut Context<'_>,
    mut write: impl FnMut() -> rustix::io::Result<usize>,
) -> Poll<io::Result<usize>> {
    loop {
        std::task::ready!(io.poll_write_ready(cx))?;
        // A refusal clears the readiness: the next round waits for the socket.
        match io.try_io(Interest::WRITABLE, || write().map_err(io::Error::from)) {
            Err(e)
                if e.kind() == io::ErrorKind::WouldBlock
                    || e.kind() == io::ErrorKind::Interrupted => {}
            done => return Poll::Ready(done),
        }
    }
}

fn broken() -> io::Error {
    io::Error::new(
        io::ErrorKind::BrokenPipe,
        "a file was not sent in full on this connection",
    )
}

/// The body of a response whose bytes the connection sends from a file: none of its
/// own; it ends when the file has been sent.
pub struct FileBody {
    slot: SendSlot,
    stage: Stage,
}

enum Stage {
    /// The file, until the first poll hands it to the connection.
    Waiting(Job),
    /// In the connection's slot, being sent.
    Sending,
    Done,
}

impl FileBody {
    /// `len` bytes of `file` from `offset`, sent on the connection `slot` belongs to.
    /// The response must announce `len` as its length (`no_chunking`).
    pub fn new(slot: SendSlot, file: File, offset: u64, len: u64) -> Self {
        FileBody {
            slot,
            stage: Stage::Waiting(Job {
                file,
                offset,
                left: len,
            }),
        }
    }
}

impl MessageBody for FileBody {
    type Error = io::Error;

    fn size(&self) -> BodySize {
        // The length is in the head already (`no_chunking`): actix must neither add
        // its own nor count the bytes, which it never sees.
        BodySize::Stream
    }

    fn poll_next(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Bytes, Self::Error>>> {
        let this = self.get_mut();
        let mut shared = this.slot.0.borrow_mut();
        match std::mem::replace(&mut this.stage, Stage::Done) {
            Stage::Done => return Poll::Ready(None),
            Stage::Waiting(_) if shared.broken => return Poll::Ready(Some(Err(broken()))),
            Stage::Waiting(job) => {
                shared.job = Some(job);
                shared.outcome = None;
            }
            Stage::Sending => {}
        }
        match shared.outcome.take() {
            Some(Ok(())) => Poll::Ready(None),
            Some(Err(e)) => Poll::Ready(Some(Err(e))),
            None => {
                this.stage = Stage::Sending;
                shared.waiting = Some(cx.waker().clone());
                Poll::Pending
            }
        }
    }
}

impl Drop for FileBody {
    fn drop(&mut self) {
        if let Stage::Sending = self.stage {
            // Dropped before its file was sent: the head announced bytes that will not
            // follow, so the connection carries no further response.
            let mut shared = self.slot.0.borrow_mut();
            shared.job = None;
            shared.waiting = None;
            shared.broken = true;
        }
    }
}
