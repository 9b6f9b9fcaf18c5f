//! Registers a route kind's handlers, by method. Actix's own path matching never decides
//! which handler runs: each kind is a scope with the root prefix (a plain string
//! comparison) guarded by the request's reading, and the scope's default service picks
//! the handler by method. No path pattern is matched at all (a resource would need a
//! regular expression for "every path", run on every request).

use std::future::ready;
use std::rc::Rc;
use std::task::{Context, Poll};

use actix_web::dev::{
    AppService, HttpServiceFactory, Service, ServiceFactory, ServiceRequest, ServiceResponse,
};
use actix_web::guard::{Guard, GuardContext};
use actix_web::http::header::{self, HeaderValue};
use actix_web::http::Method;
use actix_web::{web, FromRequest, Handler, HttpResponse, Responder, Route};
use futures::future::{join_all, LocalBoxFuture};

use super::{Kind, Target};

/// The handlers of one route kind of the table.
pub fn resource(kind: Kind) -> KindResource {
    KindResource {
        kind,
        routes: Vec::new(),
    }
}

/// One route kind's handlers, by method ([`resource`]). Registered in the order actix
/// tries them (`app::start`): the hottest kinds first.
pub struct KindResource {
    kind: Kind,
    routes: Vec<(Method, Route)>,
}

impl KindResource {
    /// Serves `method` with `handler`.
    pub fn on<F, Args>(mut self, method: Method, handler: F) -> Self
    where
        F: Handler<Args>,
        Args: FromRequest + 'static,
        F::Output: Responder + 'static,
    {
        self.routes.push((method, web::to(handler)));
        self
    }
}

impl HttpServiceFactory for KindResource {
    fn register(self, config: &mut AppService) {
        web::scope("")
            .guard(IsKind(self.kind))
            .default_service(ByMethod {
                routes: Rc::new(self.routes),
            })
            .register(config)
    }
}

/// Lets through only the requests of one route kind.
struct IsKind(Kind);

impl Guard for IsKind {
    fn check(&self, ctx: &GuardContext<'_>) -> bool {
        ctx.req_data()
            .get::<Rc<Target>>()
            .is_some_and(|t| t.kind() == Some(self.0))
    }
}

/// Builds each worker's [`ByMethodService`].
struct ByMethod {
    routes: Rc<Vec<(Method, Route)>>,
}

type RouteService = <Route as ServiceFactory<ServiceRequest>>::Service;

impl ServiceFactory<ServiceRequest> for ByMethod {
    type Response = ServiceResponse;
    type Error = actix_web::Error;
    type Config = ();
    type Service = ByMethodService;
    type InitError = ();
    type Future = LocalBoxFuture<'static, Result<ByMethodService, ()>>;

    fn new_service(&self, _: ()) -> Self::Future {
        let methods: Vec<Method> = self.routes.iter().map(|(m, _)| m.clone()).collect();
        let allow = methods
            .iter()
            .map(Method::as_str)
            .collect::<Vec<_>>()
            .join(", ");
        let services = join_all(self.routes.iter().map(|(_, r)| r.new_service(())));
        Box::pin(async move {
            let services = services.await.into_iter().collect::<Result<Vec<_>, ()>>()?;
            Ok(ByMethodService {
                routes: methods.into_iter().zip(services).collect(),
                allow: HeaderValue::from_str(&allow).map_err(|_| ())?,
            })
        })
    }
}

/// A route kind's handlers by method; any other method is answered 405 with `Allow`.
struct ByMethodService {
    routes: Vec<(Method, RouteService)>,
    allow: HeaderValue,
}

impl Service<ServiceRequest> for ByMethodService {
    type Response = ServiceResponse;
    type Error = actix_web::Error;
    type Future = LocalBoxFuture<'static, Result<ServiceResponse, actix_web::Error>>;

    fn poll_ready(&self, _: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&self, req: ServiceRequest) -> Self::Future {
        match self.routes.iter().find(|(m, _)| m == req.method()) {
            Some((_, route)) => route.call(req),
            None => {
                let refusal = HttpResponse::MethodNotAllowed()
                    .insert_header((header::ALLOW, self.allow.clone()))
                    .finish();
                Box::pin(ready(Ok(req.into_response(refusal))))
            }
        }
    }
}
