//! A real gRPC health server for the grpc kind's tests: tonic-health's own `HealthService`
//! (the standard `grpc.health.v1.Health`), served over HTTP/2 by hyper on 127.0.0.1, in
//! plaintext (h2c) and over TLS (ALPN `h2`), on the runtime of the test. The services it knows:
//! - `""` (the server) and `db`: SERVING; `cache`: NOT_SERVING; `queue`: UNKNOWN (set through
//!   tonic-health's reporter);
//! - `ghost`: SERVICE_UNKNOWN, `slow`: answers after 30 s, `guarded`: SERVING only with the
//!   metadata `x-token: sesame` (UNAUTHENTICATED otherwise); these three are answered by a thin
//!   wrapper in front of tonic-health's service, which answers everything else (an unknown
//!   service is NOT_FOUND).

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::service::TowerToHyperService;
use tonic_health::pb::health_server::{Health, HealthServer};
use tonic_health::pb::{HealthCheckRequest, HealthCheckResponse, health_check_response::ServingStatus};
use tonic_health::server::HealthService;

struct Wrapped(HealthService);

#[tonic::async_trait]
impl Health for Wrapped {
    async fn check(
        &self,
        request: tonic::Request<HealthCheckRequest>,
    ) -> Result<tonic::Response<HealthCheckResponse>, tonic::Status> {
        let answer = |status: ServingStatus| Ok(tonic::Response::new(HealthCheckResponse { status: status.into() }));
        match request.get_ref().service.as_str() {
            "ghost" => answer(ServingStatus::ServiceUnknown),
            "slow" => {
                tokio::time::sleep(Duration::from_secs(30)).await;
                answer(ServingStatus::Serving)
            }
            "guarded" => match request.metadata().get("x-token").and_then(|v| v.to_str().ok()) {
                Some("sesame") => answer(ServingStatus::Serving),
                _ => Err(tonic::Status::unauthenticated("no token")),
            },
            _ => self.0.check(request).await,
        }
    }

    type WatchStream = <HealthService as Health>::WatchStream;

    async fn watch(
        &self,
        request: tonic::Request<HealthCheckRequest>,
    ) -> Result<tonic::Response<Self::WatchStream>, tonic::Status> {
        self.0.watch(request).await
    }
}

/// The server's two ports.
pub struct GrpcHealth {
    /// Plaintext HTTP/2.
    pub plain: SocketAddr,
    /// TLS with ALPN `h2`, with the certificate given to [`GrpcHealth::start`].
    pub tls: SocketAddr,
}

impl GrpcHealth {
    /// Starts it on the current runtime with `cert` and `key` (PEM files) for its TLS port.
    pub async fn start(cert: &Path, key: &Path) -> GrpcHealth {
        let (reporter, _) = tonic_health::server::health_reporter();
        reporter
            .set_service_status("", tonic_health::ServingStatus::Serving)
            .await;
        reporter
            .set_service_status("db", tonic_health::ServingStatus::Serving)
            .await;
        reporter
            .set_service_status("cache", tonic_health::ServingStatus::NotServing)
            .await;
        reporter
            .set_service_status("queue", tonic_health::ServingStatus::Unknown)
            .await;
        let service = HealthServer::new(Wrapped(HealthService::from_health_reporter(reporter)));

        let acceptor = super::tls_acceptor(cert, key, &[b"h2"]);

        let plain = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let tls = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let server = GrpcHealth {
            plain: plain.local_addr().expect("addr"),
            tls: tls.local_addr().expect("addr"),
        };
        let svc = service.clone();
        tokio::spawn(async move {
            while let Ok((stream, _)) = plain.accept().await {
                let svc = svc.clone();
                tokio::spawn(async move {
                    let _ = hyper::server::conn::http2::Builder::new(TokioExecutor::new())
                        .serve_connection(TokioIo::new(stream), TowerToHyperService::new(svc))
                        .await;
                });
            }
        });
        tokio::spawn(async move {
            while let Ok((stream, _)) = tls.accept().await {
                let (svc, acceptor) = (service.clone(), acceptor.clone());
                tokio::spawn(async move {
                    let Ok(stream) = acceptor.accept(stream).await else {
                        return;
                    };
                    let _ = hyper::server::conn::http2::Builder::new(TokioExecutor::new())
                        .serve_connection(TokioIo::new(stream), TowerToHyperService::new(svc))
                        .await;
                });
            }
        });
        server
    }
}
