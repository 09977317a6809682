//! The HTTP server: accepts connections and serves the route table on each with hyper, with the
//! edge limits warp 0.4's own server leaves off. Warp builds hyper's connections without a timer,
//! so hyper's header-read timeout never fires there; here a connection that has not sent a whole
//! request head within the header timeout is closed, and a request not answered within the
//! request timeout is answered 503 `/problems/timeout` (a stream counts only until its head is
//! sent). It stops accepting when told, then waits for the connections it has.

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::time::Duration;

use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use storefront_actors::trace;
use tokio::net::TcpListener;
use tower_service::Service;
use tracing::Instrument;
use warp::filters::BoxedFilter;

use crate::reply::ApiError;
use crate::{Problem, ProblemType};

type Response = warp::reply::Response;

/// The address of a request's connection, kept in the request's extensions.
#[derive(Debug, Clone, Copy)]
pub struct Peer(pub SocketAddr);

/// The server's time limits.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// For a connection to send a whole request head.
    pub header_timeout: Duration,
    /// For a request to be answered.
    pub request_timeout: Duration,
}

/// Serves `routes` on `listener` until `stopping` completes, then waits for open connections.
pub async fn serve(
    listener: TcpListener,
    routes: BoxedFilter<(Response,)>,
    limits: Limits,
    stopping: impl Future<Output = ()>,
) {
    let graceful = GracefulShutdown::new();
    let mut stopping = std::pin::pin!(stopping);
    loop {
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(error) => {
                    // Out of file descriptors, say: wait a little rather than spin.
                    tracing::warn!(%error, "accepting a connection failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
            () = &mut stopping => break,
        };
        let routes = warp::service(routes.clone());
        let service = hyper::service::service_fn(move |mut request: hyper::Request<Incoming>| {
            request.extensions_mut().insert(Peer(peer));
            let mut routes = routes.clone();
            let span = request_span(&request);
            async move {
                let answer = crate::redis::one_budget(routes.call(request));
                let answer = match tokio::time::timeout(limits.request_timeout, answer).await {
                    Ok(answer) => answer,
                    Err(_) => Ok::<_, Infallible>(timed_out(limits.request_timeout)),
                };
                if let Ok(response) = &answer {
                    let span = tracing::Span::current();
                    span.record("http.response.status_code", response.status().as_u16());
                    if response.status().is_server_error() {
                        span.record("otel.status_code", "ERROR");
                    }
                }
                answer
            }
            .instrument(span)
        });
        let mut builder = auto::Builder::new(TokioExecutor::new());
        builder.http1().timer(TokioTimer::new()).header_read_timeout(limits.header_timeout);
        let connection =
            builder.serve_connection_with_upgrades(TokioIo::new(stream), service).into_owned();
        let connection = graceful.watch(connection);
        tokio::spawn(async move {
            if let Err(error) = connection.await {
                tracing::debug!(%peer, %error, "connection ended with an error");
            }
        });
    }
    drop(listener);
    graceful.shutdown().await;
}

/// The span of one request, for traces (none unless they are exported): named after the route
/// that takes it, and continuing the caller's trace when it carries a W3C `traceparent`.
fn request_span(request: &hyper::Request<Incoming>) -> tracing::Span {
    if !tracing::enabled!(target: trace::TARGET, tracing::Level::INFO) {
        return tracing::Span::none();
    }
    let (method, path) = (request.method().as_str(), request.uri().path());
    let route = crate::routes::template_of(method, path);
    let span = tracing::info_span!(
        target: trace::TARGET,
        "http.request",
        otel.name = route.unwrap_or(method),
        otel.kind = "server",
        otel.status_code = tracing::field::Empty,
        http.request.method = method,
        http.route = route,
        url.path = path,
        http.response.status_code = tracing::field::Empty,
    );
    if let Some(traceparent) = request.headers().get("traceparent").and_then(|v| v.to_str().ok()) {
        trace::continue_trace(&span, traceparent);
    }
    span
}

fn timed_out(after: Duration) -> Response {
    let problem = Problem::new(ProblemType::Timeout, format!("not answered within {after:?}"));
    ApiError::new(problem)
        .with_header("retry-after", http::HeaderValue::from_static("1"))
        .into_api_response()
        .into_response()
}

#[cfg(test)]
mod tests {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use warp::Filter;

    use super::*;

    #[tokio::test]
    async fn a_request_not_answered_in_time_is_a_503_problem() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let slow = warp::path!("slow")
            .then(|| async {
                std::future::pending::<()>().await;
                warp::reply::Response::default()
            })
            .boxed();
        let limits = Limits {
            header_timeout: Duration::from_secs(10),
            request_timeout: Duration::from_millis(200),
        };
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let server = tokio::spawn(serve(listener, slow, limits, async {
            let _ = stopped.await;
        }));
        let mut client = tokio::net::TcpStream::connect(addr).await.unwrap();
        client
            .write_all(b"GET /slow HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n")
            .await
            .unwrap();
        let mut answer = String::new();
        client.read_to_string(&mut answer).await.unwrap();
        assert!(answer.starts_with("HTTP/1.1 503"), "{answer}");
        assert!(answer.contains("application/problem+json"), "{answer}");
        assert!(answer.contains(ProblemType::Timeout.uri()), "{answer}");
        stop.send(()).unwrap();
        server.await.unwrap();
    }
}
