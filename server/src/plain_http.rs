//! The plain-HTTP listener: what `HttpServer::bind` would build, with each connection
//! a [`FileConn`], so that blob bytes go from the page cache to the socket
//! (`send_file`). actix-web's own server takes no other connection type; TLS
//! connections still go through it (`app.rs`), where bytes must be encrypted in
//! memory anyway.

use std::future::Future;
use std::net::SocketAddr;
use std::time::Duration;

use actix_http::{HttpService, KeepAlive, Protocol, Request, Response};
use actix_server::Server;
use actix_service::{
    fn_service, map_config, IntoServiceFactory, ServiceFactory, ServiceFactoryExt,
};
use actix_web::body::MessageBody;
use actix_web::dev::{AppConfig, Extensions};
use tokio::net::TcpStream;

use crate::config::ServerConfig;
use crate::send_file::FileConn;

/// How long a client has to close after the server closed its side (actix-web's own
/// default).
const CLIENT_DISCONNECT_TIMEOUT: Duration = Duration::from_secs(1);
/// Connections waiting to be accepted (actix-web's own default).
const BACKLOG: u32 = 1024;

/// Binds every address `config.listen` resolves to and starts the workers serving
/// `application` on them; the server and the first address bound.
pub fn serve<F, I, S, B>(
    application: F,
    config: &ServerConfig,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<(Server, SocketAddr)>
where
    F: Fn() -> I + Send + Clone + 'static,
    I: IntoServiceFactory<S, Request>,
    S: ServiceFactory<Request, Config = AppConfig> + 'static,
    S::Error: Into<actix_web::Error> + 'static,
    S::InitError: std::fmt::Debug,
    S::Response: Into<Response<B>> + 'static,
    <S::Service as actix_service::Service<Request>>::Future: 'static,
    S::Service: 'static,
    B: MessageBody + 'static,
{
    let mut builder = Server::build()
        .shutdown_timeout(config.shutdown_timeout_secs)
        .shutdown_signal(shutdown);
    if config.workers > 0 {
        builder = builder.workers(config.workers);
    }
    let addrs: Vec<SocketAddr> =
        std::net::ToSocketAddrs::to_socket_addrs(config.listen.as_str())?.collect();
    let mut bound = Vec::new();
    let mut last_error = None;
    for addr in addrs {
        match listen_on(addr) {
            Ok(listener) => bound.push(listener),
            Err(e) => last_error = Some(e),
        }
    }
    if bound.is_empty() {
        return Err(last_error
            .map(anyhow::Error::from)
            .unwrap_or_else(|| anyhow::anyhow!("the address resolves to nothing")));
    }
    let first = bound[0].local_addr()?;
    for listener in bound {
        let addr = listener.local_addr()?;
        let application = application.clone();
        let graceful = builder.graceful_shutdown_signal();
        builder = builder.listen(format!("signet-{addr}"), listener, move || {
            let graceful = graceful.clone();
            let app = application()
                .into_factory()
                .map_err(|e| e.into().error_response());
            let http = HttpService::build()
                .keep_alive(KeepAlive::default())
                .client_request_timeout(crate::app::CLIENT_REQUEST_TIMEOUT)
                .client_disconnect_timeout(CLIENT_DISCONNECT_TIMEOUT)
                .local_addr(addr)
                .graceful_shutdown_signal(move || {
                    let graceful = graceful.clone();
                    async move { graceful.notified().await }
                })
                .on_connect_ext(|conn: &FileConn, data: &mut Extensions| {
                    data.insert(conn.slot());
                })
                .finish(map_config(app, |_| AppConfig::default()));
            fn_service(|io: TcpStream| async move {
                // Small responses go out at once, as `HttpService::tcp` sets.
                let _ = io.set_nodelay(true);
                let peer = io.peer_addr().ok();
                Ok((FileConn::new(io), Protocol::Http1, peer))
            })
            .and_then(http)
        })?;
    }
    Ok((builder.run(), first))
}

/// A listening socket on `addr`, reusable at once after a restart, with actix-web's
/// backlog (the standard library's `bind` leaves 128).
fn listen_on(addr: SocketAddr) -> std::io::Result<std::net::TcpListener> {
    let socket = match addr {
        SocketAddr::V4(_) => tokio::net::TcpSocket::new_v4()?,
        SocketAddr::V6(_) => tokio::net::TcpSocket::new_v6()?,
    };
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(BACKLOG)?.into_std()
}
