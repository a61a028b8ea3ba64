//! The per-connection service every request of a connection goes through, and the reused slot
//! a request's future lives in.

use std::cell::Cell;
use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::rc::Rc;
use std::sync::Arc;
use std::task::{Context, Poll};

use http::{Request, Response};
use hyper::body::Incoming;

use crate::body::{ProxyBody, RequestBody};
use crate::context::{ConnCtx, ListenerShared, Worker};
use crate::headers::{check_request, Checks};

pub(crate) trait HandleFuture:
    Future<Output = Result<Response<ProxyBody>, Infallible>> + 'static
{
}

impl<T: Future<Output = Result<Response<ProxyBody>, Infallible>> + 'static> HandleFuture for T {}

/// [`crate::request::handle`], as a function pointer whose return type names its future.
pub(super) type HandleFn<F> =
    fn(Arc<ListenerShared>, Rc<Worker>, Rc<ConnCtx>, Request<RequestBody>) -> F;

/// A request's future in a heap slot, which goes back to its connection's spare slot when
/// the request is done.
type FutureBox<F> = Pin<Box<Option<F>>>;

/// The per-connection hyper service: each request goes to [`crate::request::handle`].
///
/// A request's future (a few KiB: past the allocator's per-thread cache) lives in a heap slot
/// that the connection reuses from one request to the next, instead of one allocation per
/// request. (hyper wants an `Unpin` future, so the slot cannot be hyper's own.)
pub(crate) struct Svc<F> {
    l: Arc<ListenerShared>,
    pub(crate) w: Rc<Worker>,
    c: Rc<ConnCtx>,
    handle: HandleFn<F>,
    spare: Rc<Cell<Option<FutureBox<F>>>>,
}

impl<F> Svc<F> {
    /// The service of connection `c`: each request goes to `handle`.
    pub(super) fn new(
        l: Arc<ListenerShared>,
        w: Rc<Worker>,
        c: Rc<ConnCtx>,
        handle: HandleFn<F>,
    ) -> Self {
        Self {
            l,
            w,
            c,
            handle,
            spare: Rc::new(Cell::new(None)),
        }
    }
}

impl<F> Clone for Svc<F> {
    fn clone(&self) -> Self {
        Self {
            l: self.l.clone(),
            w: self.w.clone(),
            c: self.c.clone(),
            handle: self.handle,
            spare: self.spare.clone(),
        }
    }
}

impl<F: HandleFuture> hyper::service::Service<Request<Incoming>> for Svc<F> {
    type Response = Response<ProxyBody>;
    type Error = Infallible;
    type Future = InFlight<F>;

    /// A request from hyper's sessions: checked first ([`check_request`]); a refused one
    /// carries its [`crate::headers::Refusal`] to [`crate::request::handle`], which answers it.
    fn call(&self, req: Request<Incoming>) -> InFlight<F> {
        let mut req = req.map(RequestBody::Hyper);
        let hcm = &self.l.http;
        let checks = Checks {
            max_head: hcm.max_request_head(),
            internal: hcm.is_internal_request(self.c.remote.ip(), req.headers()),
            accept_http_10: hcm.accept_http_10,
            default_host_10: hcm.default_host_for_http_10.as_ref(),
        };
        if let Err(refusal) = check_request(&mut req, checks) {
            req.extensions_mut().insert(refusal);
        }
        self.call_with(req)
    }
}

impl<F: HandleFuture> Svc<F> {
    /// Start serving `req`, in the connection's spare future slot when it has one.
    pub(crate) fn call_with(&self, req: Request<RequestBody>) -> InFlight<F> {
        let fut = (self.handle)(self.l.clone(), self.w.clone(), self.c.clone(), req);
        let slot = match self.spare.take() {
            Some(mut slot) => {
                slot.set(Some(fut));
                slot
            }
            None => Box::pin(Some(fut)),
        };
        InFlight {
            slot: Some(slot),
            spare: self.spare.clone(),
        }
    }
}

/// One request's future, in a reused slot (see [`Svc`]).
pub(crate) struct InFlight<F> {
    slot: Option<FutureBox<F>>,
    spare: Rc<Cell<Option<FutureBox<F>>>>,
}

impl<F: HandleFuture> Future for InFlight<F> {
    type Output = F::Output;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        match self.slot.as_mut().and_then(|s| s.as_mut().as_pin_mut()) {
            Some(fut) => fut.poll(cx),
            // Never: the slot is emptied only on drop.
            None => Poll::Pending,
        }
    }
}

impl<F> Drop for InFlight<F> {
    fn drop(&mut self) {
        if let Some(mut slot) = self.slot.take() {
            slot.set(None);
            self.spare.set(Some(slot));
        }
    }
}
