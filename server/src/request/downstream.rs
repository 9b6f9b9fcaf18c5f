//! How a layer in front of the handlers hands a request on.
//!
//! Each layer is an async function of the request and of what comes after it. Chained
//! through [`Layer`], the layers call one another directly: one future for the whole
//! way to the handlers, where a stack of actix middlewares allocates and moves a boxed
//! future per layer on every request.

use std::future::Future;

use actix_web::body::MessageBody;
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::middleware::Next;

/// What a layer hands the request on to: the next layer, or the handlers.
pub trait Downstream {
    type Body: MessageBody;

    fn call(
        self,
        req: ServiceRequest,
    ) -> impl Future<Output = Result<ServiceResponse<Self::Body>, actix_web::Error>>;
}

/// The handlers, as actix hands them to the one middleware that runs the layers.
impl<B: MessageBody> Downstream for Next<B> {
    type Body = B;

    fn call(
        self,
        req: ServiceRequest,
    ) -> impl Future<Output = Result<ServiceResponse<B>, actix_web::Error>> {
        Next::call(&self, req)
    }
}

/// A layer in front of what comes after it.
pub struct Layer<F, D> {
    layer: F,
    next: D,
}

impl<F, D> Layer<F, D> {
    pub fn new(layer: F, next: D) -> Self {
        Layer { layer, next }
    }
}

impl<F, D, Fut, B> Downstream for Layer<F, D>
where
    F: FnOnce(ServiceRequest, D) -> Fut,
    Fut: Future<Output = Result<ServiceResponse<B>, actix_web::Error>>,
    B: MessageBody,
{
    type Body = B;

    fn call(
        self,
        req: ServiceRequest,
    ) -> impl Future<Output = Result<ServiceResponse<B>, actix_web::Error>> {
        (self.layer)(req, self.next)
    }
}
