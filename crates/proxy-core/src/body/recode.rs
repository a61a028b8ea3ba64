//! A body whose data is re-coded as it passes (compressed, decompressed): each data frame is
//! coded and flushed on its own, so nothing waits for the rest of the body; the coder's tail
//! goes out before the trailers, or at the end.

use std::pin::Pin;
use std::task::{ready, Context, Poll};

use bytes::Bytes;
use http_body::{Body, Frame};

use super::{BodyError, ProxyBody};

/// A streaming coder of a body's data.
pub trait Recode {
    /// Code `input`; what it gives back can be decoded by the peer without what follows (a
    /// flush), and may be empty.
    fn data(&mut self, input: &[u8]) -> std::io::Result<Bytes>;
    /// The end of the data: the coder's tail.
    fn finish(&mut self) -> std::io::Result<Bytes>;
}

pub(super) struct Recoded {
    inner: ProxyBody,
    coder: Box<dyn Recode>,
    /// The inner body's trailers, sent after the coder's tail.
    trailers: Option<Frame<Bytes>>,
    /// The coder has finished.
    done: bool,
}

impl Recoded {
    pub(super) fn new(inner: ProxyBody, coder: Box<dyn Recode>) -> Self {
        Recoded {
            inner,
            coder,
            trailers: None,
            done: false,
        }
    }

    pub(super) fn poll_frame(
        &mut self,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BodyError>>> {
        loop {
            if let Some(t) = self.trailers.take() {
                return Poll::Ready(Some(Ok(t)));
            }
            if self.done {
                return Poll::Ready(None);
            }
            let out = match ready!(Pin::new(&mut self.inner).poll_frame(cx)) {
                Some(Ok(frame)) => match frame.into_data() {
                    Ok(data) => {
                        let mut out = self.coder.data(&data);
                        if out.is_ok() && self.inner.is_end_stream() {
                            out = self.tail(out);
                        }
                        out
                    }
                    Err(frame) => {
                        self.trailers = Some(frame);
                        self.tail(Ok(Bytes::new()))
                    }
                },
                Some(Err(e)) => return Poll::Ready(Some(Err(e))),
                None => self.tail(Ok(Bytes::new())),
            };
            match out {
                Ok(b) if b.is_empty() => continue,
                Ok(b) => return Poll::Ready(Some(Ok(Frame::data(b)))),
                Err(e) => {
                    self.done = true;
                    self.trailers = None;
                    return Poll::Ready(Some(Err(Box::new(e))));
                }
            }
        }
    }

    /// `head` followed by the coder's tail.
    fn tail(&mut self, head: std::io::Result<Bytes>) -> std::io::Result<Bytes> {
        self.done = true;
        let head = head?;
        let tail = self.coder.finish()?;
        Ok(match (head.is_empty(), tail.is_empty()) {
            (_, true) => head,
            (true, false) => tail,
            (false, false) => {
                let mut both = Vec::with_capacity(head.len() + tail.len());
                both.extend_from_slice(&head);
                both.extend_from_slice(&tail);
                both.into()
            }
        })
    }

    pub(super) fn is_end_stream(&self) -> bool {
        self.done && self.trailers.is_none()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::BodyExt;

    /// Upper-cases its input and ends with `!`.
    struct Shout;
    impl Recode for Shout {
        fn data(&mut self, input: &[u8]) -> std::io::Result<Bytes> {
            Ok(input.to_ascii_uppercase().into())
        }
        fn finish(&mut self) -> std::io::Result<Bytes> {
            Ok(Bytes::from_static(b"!"))
        }
    }

    #[tokio::test]
    async fn each_frame_is_coded_and_the_tail_ends_the_data() {
        let body = ProxyBody::full("hello").recode(Box::new(Shout));
        let collected = body.collect().await.unwrap().to_bytes();
        assert_eq!(&collected[..], b"HELLO!");
        let body = ProxyBody::empty().recode(Box::new(Shout));
        let collected = body.collect().await.unwrap().to_bytes();
        assert_eq!(&collected[..], b"!");
    }
}
