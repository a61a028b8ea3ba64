//! A response body read straight from the connection, which goes back to its pool at the end.

use std::rc::Rc;
use std::task::{ready, Context, Poll};

use bytes::{Buf, Bytes};
use http::header::{HeaderMap, HeaderName, HeaderValue};
use http::Response;
use http_body::{Frame, SizeHint};

use crate::http1::chunked::{parse_chunk_size, BadChunk, Chunk, MAX_CHUNK_LINE};
use crate::http1::Framing;

use super::conn::{H1Conn, ResponseStart};

/// How the rest of the response body is delimited.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// This many bytes are left.
    Length(u64),
    Chunked(Chunk),
    /// Until the upstream closes.
    Close,
    Done,
}

/// Where idle connections of Baton's own client are kept (the worker's upstream pools).
pub trait Checkin {
    /// Take `conn`, idle and reusable (its cluster is [`H1Conn::cidx`]).
    fn checkin_h1(&self, conn: Box<H1Conn>);
}

/// Where a connection goes back to once its response body has been read.
#[derive(Clone)]
pub struct Home {
    pub pools: Rc<dyn Checkin>,
}

/// A body error as `http_body` bodies carry them (the proxied body's error type, so a frame
/// passes through without conversion).
pub type FrameError = Box<dyn std::error::Error + Send + Sync>;

/// Why a response body could not be read.
#[derive(Debug, thiserror::Error)]
pub enum BodyReadError {
    #[error("upstream closed the connection before the response body ended")]
    Incomplete,
    #[error("malformed chunked encoding in the upstream response")]
    BadChunk,
    #[error("upstream read failed: {0}")]
    Io(#[from] std::io::Error),
}

impl From<BadChunk> for BodyReadError {
    fn from(_: BadChunk) -> Self {
        BodyReadError::BadChunk
    }
}

impl std::fmt::Debug for Home {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Home").finish_non_exhaustive()
    }
}

/// A response body read from an [`H1Conn`].
pub struct H1Body {
    conn: Option<Box<H1Conn>>,
    state: State,
    keep_alive: bool,
    home: Option<Home>,
}

impl std::fmt::Debug for H1Body {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("H1Body")
            .field("state", &self.state)
            .field("keep_alive", &self.keep_alive)
            .finish()
    }
}

enum Step {
    Frame(Frame<Bytes>),
    /// The buffer holds too little: read more.
    Fill,
    End,
}

// === impl H1Body ===

impl H1Body {
    /// The response whose head `start` holds, its body (as `wrap` makes it) to be read from
    /// `conn`, which goes `home` at the end.
    #[inline]
    pub fn response<T>(
        start: ResponseStart,
        conn: Box<H1Conn>,
        home: Home,
        wrap: impl FnOnce(H1Body) -> T,
    ) -> Response<T> {
        let state = match start.framing {
            Framing::None => State::Length(0),
            Framing::Length(n) => State::Length(n),
            Framing::Chunked => State::Chunked(Chunk::Size),
            Framing::Close => State::Close,
        };
        let mut body = H1Body {
            conn: Some(conn),
            state,
            keep_alive: start.keep_alive,
            home: Some(home),
        };
        if body.is_end_stream() {
            // No body (HEAD, 204, 304, length 0): the connection is free now, and hyper never
            // polls an ended body.
            body.finish();
        }
        let (parts, ()) = start.head.into_parts();
        Response::from_parts(parts, wrap(body))
    }

    pub fn is_end_stream(&self) -> bool {
        matches!(self.state, State::Done | State::Length(0))
    }

    pub fn size_hint(&self) -> SizeHint {
        match self.state {
            State::Length(n) => SizeHint::with_exact(n),
            State::Done => SizeHint::with_exact(0),
            _ => SizeHint::default(),
        }
    }

    /// The body has been read to its end: the connection goes back to its pool if the
    /// upstream keeps it open and sent nothing more.
    fn finish(&mut self) {
        self.state = State::Done;
        let conn = self.conn.take();
        if let (Some(conn), Some(home)) = (conn, self.home.take()) {
            if self.keep_alive && conn.buf.is_empty() {
                home.pools.checkin_h1(conn);
            }
        }
    }

    pub fn poll_frame(
        &mut self,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, FrameError>>> {
        loop {
            let step = match self.step() {
                Ok(s) => s,
                Err(e) => {
                    self.fail();
                    return Poll::Ready(Some(Err(Box::new(e))));
                }
            };
            match step {
                Step::Frame(f) => {
                    if matches!(self.state, State::Length(0)) {
                        self.finish();
                    }
                    return Poll::Ready(Some(Ok(f)));
                }
                Step::End => {
                    self.finish();
                    return Poll::Ready(None);
                }
                Step::Fill => {}
            }
            let Some(conn) = self.conn.as_mut() else {
                return Poll::Ready(None);
            };
            match ready!(conn.poll_fill(cx)) {
                Ok(0) if self.state == State::Close => {
                    self.finish();
                    return Poll::Ready(None);
                }
                Ok(0) => {
                    self.fail();
                    return Poll::Ready(Some(Err(Box::new(BodyReadError::Incomplete))));
                }
                Ok(_) => {}
                Err(e) => {
                    self.fail();
                    return Poll::Ready(Some(Err(Box::new(BodyReadError::Io(e)))));
                }
            }
        }
    }

    fn fail(&mut self) {
        self.state = State::Done;
        self.conn = None;
    }

    /// What the buffered bytes give next.
    fn step(&mut self) -> Result<Step, BodyReadError> {
        let Some(conn) = self.conn.as_mut() else {
            return Ok(Step::End);
        };
        match self.state {
            State::Done | State::Length(0) => Ok(Step::End),
            State::Length(left) => {
                if conn.buf.is_empty() {
                    return Ok(Step::Fill);
                }
                let data = conn.take(usize::try_from(left).unwrap_or(usize::MAX));
                self.state = State::Length(left - data.len() as u64);
                Ok(Step::Frame(Frame::data(data)))
            }
            State::Close => {
                if conn.buf.is_empty() {
                    return Ok(Step::Fill);
                }
                Ok(Step::Frame(Frame::data(conn.take(usize::MAX))))
            }
            State::Chunked(chunk) => self.step_chunked(chunk),
        }
    }

    fn step_chunked(&mut self, mut chunk: Chunk) -> Result<Step, BodyReadError> {
        let Some(conn) = self.conn.as_mut() else {
            return Ok(Step::End);
        };
        loop {
            let buf = &conn.buf;
            match chunk {
                Chunk::Size => {
                    let Some(eol) = buf.iter().position(|&b| b == b'\n') else {
                        if buf.len() > MAX_CHUNK_LINE {
                            return Err(BodyReadError::BadChunk);
                        }
                        self.state = State::Chunked(chunk);
                        return Ok(Step::Fill);
                    };
                    let size = parse_chunk_size(&buf[..eol])?;
                    conn.buf.advance(eol + 1);
                    chunk = if size == 0 {
                        Chunk::Trailers
                    } else {
                        Chunk::Data(size)
                    };
                }
                Chunk::Data(left) => {
                    if buf.is_empty() {
                        self.state = State::Chunked(chunk);
                        return Ok(Step::Fill);
                    }
                    let data = conn.take(usize::try_from(left).unwrap_or(usize::MAX));
                    let left = left - data.len() as u64;
                    self.state = State::Chunked(if left == 0 {
                        Chunk::DataEnd
                    } else {
                        Chunk::Data(left)
                    });
                    return Ok(Step::Frame(Frame::data(data)));
                }
                Chunk::DataEnd => {
                    if buf.len() < 2 {
                        self.state = State::Chunked(chunk);
                        return Ok(Step::Fill);
                    }
                    if &buf[..2] != b"\r\n" {
                        return Err(BodyReadError::BadChunk);
                    }
                    conn.buf.advance(2);
                    chunk = Chunk::Size;
                }
                Chunk::Trailers => {
                    let mut fields = [httparse::EMPTY_HEADER; 16];
                    match httparse::parse_headers(buf, &mut fields) {
                        Ok(httparse::Status::Complete((n, fields))) => {
                            let mut trailers = HeaderMap::new();
                            for f in fields {
                                let name = HeaderName::from_bytes(f.name.as_bytes());
                                let value = HeaderValue::from_bytes(f.value);
                                if let (Ok(name), Ok(value)) = (name, value) {
                                    trailers.append(name, value);
                                }
                            }
                            conn.buf.advance(n);
                            self.state = State::Done;
                            if trailers.is_empty() {
                                return Ok(Step::End);
                            }
                            // The connection is done with; the caller's next poll ends the body.
                            self.finish();
                            return Ok(Step::Frame(Frame::trailers(trailers)));
                        }
                        Ok(httparse::Status::Partial) if buf.len() <= conn.head_limit => {
                            self.state = State::Chunked(chunk);
                            return Ok(Step::Fill);
                        }
                        _ => return Err(BodyReadError::BadChunk),
                    }
                }
            }
        }
    }
}

impl Drop for H1Body {
    fn drop(&mut self) {
        // A body dropped before its end leaves the connection mid-response: it is closed
        // (`conn` drops here), never pooled.
        self.conn = None;
    }
}
