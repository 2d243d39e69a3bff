//! HTTP: the routes, the `/ws` upgrade, `/healthz`, `/metrics`, and the error shape.
//!
//! Handlers are thin: they authenticate, validate ids, and turn a request into a registry call
//! or a group-actor command; every error leaves as `{"error":{"code","message"}}` with the status
//! of its code (docs/PROTOCOL.md §5). The files: `admin.rs` (the admin API, with the [`Admin`]
//! and [`JsonBody`] extractors below), `assets.rs` (serving the web client's files, which
//! `embedded.rs` embeds from `src/web/`). Bodies are
//! typed in `protocol::admin`; nothing here builds JSON by hand.

mod account;
mod admin;
mod assets;
mod embedded;

use std::future::{ready, Future, Ready};
use std::pin::Pin;
use std::sync::Arc;

use actix_web::dev::Payload;
use actix_web::http::StatusCode;
use actix_web::{guard, web, FromRequest, HttpRequest, HttpResponse, ResponseError};
use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::accounts::Accounts;
use crate::auth::Credential;
use crate::backup::Backups;
use crate::group::GroupError;
use crate::protocol::{
    from_json, to_json, ErrorCode, Health, HttpError, HttpErrorBody, Refusal, TokenQuery,
};
use crate::registry::Registry;
use crate::store::StoreError;

/// What every handler shares.
pub(crate) struct AppState {
    pub registry: Arc<Registry>,
    pub accounts: Accounts,
    pub backups: Backups,
}

type State = web::Data<AppState>;

/// An error answer: a refusal, with the status of its code.
#[derive(Debug)]
pub(crate) struct ApiError {
    refusal: Refusal,
    /// Overrides the code's usual status (only `DELETE` of a non-member: 404 `not_member`).
    status: Option<StatusCode>,
}

impl ApiError {
    fn new(code: ErrorCode, message: impl Into<String>) -> ApiError {
        Refusal::new(code, message).into()
    }
}

impl From<Refusal> for ApiError {
    /// HTTP says `bad_request` where the WebSocket says `bad_frame` (a shared check, such as
    /// a message body's, refuses with the WebSocket's code).
    fn from(mut refusal: Refusal) -> ApiError {
        if refusal.code == ErrorCode::BadFrame {
            refusal.code = ErrorCode::BadRequest;
        }
        ApiError {
            refusal,
            status: None,
        }
    }
}

impl std::fmt::Display for ApiError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.refusal.fmt(f)
    }
}

impl ResponseError for ApiError {
    fn status_code(&self) -> StatusCode {
        self.status.unwrap_or_else(|| {
            StatusCode::from_u16(self.refusal.code.http_status())
                .unwrap_or(StatusCode::INTERNAL_SERVER_ERROR)
        })
    }

    fn error_response(&self) -> HttpResponse {
        let body = HttpError {
            error: HttpErrorBody {
                code: self.refusal.code,
                message: self.refusal.message.clone(),
                retry_after_ms: self.refusal.retry_after_ms,
            },
        };
        HttpResponse::build(self.status_code())
            .content_type("application/json")
            .body(to_json(&body))
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> ApiError {
        log::error!("admin request failed in storage: {e}");
        ApiError::new(ErrorCode::Storage, format!("not stored ({e}); retry later"))
    }
}

impl From<GroupError> for ApiError {
    fn from(e: GroupError) -> ApiError {
        if let GroupError::Storage(detail) = &e {
            log::error!("admin request failed: {detail}");
        }
        Refusal::from(e).into()
    }
}

impl From<actix::MailboxError> for ApiError {
    fn from(e: actix::MailboxError) -> ApiError {
        log::error!("group actor unavailable: {e}");
        ApiError::new(ErrorCode::Internal, "the group is unavailable; retry later")
    }
}

type ApiResult = Result<HttpResponse, ApiError>;

/// A JSON answer.
fn json_response<T: Serialize>(status: StatusCode, body: &T) -> HttpResponse {
    HttpResponse::build(status)
        .content_type("application/json")
        .body(to_json(body))
}

/// Registers every route.
pub(crate) fn routes(cfg: &mut web::ServiceConfig) {
    for &path in assets::PATHS {
        cfg.route(
            path,
            web::route()
                .guard(guard::Any(guard::Get()).or(guard::Head()))
                .to(assets::serve),
        );
    }
    cfg.route("/healthz", web::get().to(healthz))
        .route("/metrics", web::get().to(metrics))
        .route("/ws", web::get().to(websocket))
        .service(admin::scope())
        .default_service(web::to(not_found));
}

fn bearer(req: &HttpRequest) -> Option<&str> {
    req.headers()
        .get("authorization")?
        .to_str()
        .ok()?
        .strip_prefix("Bearer ")
        .map(str::trim)
}

fn state(req: &HttpRequest) -> Result<&State, ApiError> {
    req.app_data::<State>()
        .ok_or_else(|| ApiError::new(ErrorCode::Internal, "server state missing"))
}

/// Extracting this admits only requests that carry the admin token.
pub(crate) struct Admin;

impl FromRequest for Admin {
    type Error = ApiError;
    type Future = Ready<Result<Admin, ApiError>>;

    fn from_request(req: &HttpRequest, _payload: &mut Payload) -> Self::Future {
        ready(state(req).and_then(|state| match bearer(req) {
            Some(token) if state.accounts.auth().is_admin(token) => Ok(Admin),
            _ => Err(ApiError::new(
                ErrorCode::Unauthorized,
                "admin token required",
            )),
        }))
    }
}

/// Extracting this admits only requests with a user's bearer token that is good now (see
/// [`Accounts::authenticate`]).
pub(crate) struct User(pub Credential);

impl FromRequest for User {
    type Error = ApiError;
    type Future = Ready<Result<User, ApiError>>;

    fn from_request(req: &HttpRequest, _payload: &mut Payload) -> Self::Future {
        ready(state(req).and_then(|state| {
            let token = bearer(req).ok_or_else(|| {
                ApiError::new(ErrorCode::Unauthorized, "a user's bearer token is required")
            })?;
            Ok(User(state.accounts.authenticate(token)?))
        }))
    }
}

/// A request body read whole, refused when larger than a JSON-escaped message body of the
/// maximum size could be (actix's own limit would answer with a plain-text 413).
pub(crate) struct Body(web::BytesMut);

impl FromRequest for Body {
    type Error = ApiError;
    type Future = Pin<Box<dyn Future<Output = Result<Body, ApiError>>>>;

    fn from_request(req: &HttpRequest, payload: &mut Payload) -> Self::Future {
        let limit = state(req).map(|state| {
            state
                .registry
                .config()
                .max_body_bytes
                .saturating_mul(6)
                .saturating_add(64 << 10)
        });
        let mut payload = payload.take();
        Box::pin(async move {
            use futures_util::StreamExt;
            let limit = limit?;
            let mut body = web::BytesMut::new();
            while let Some(chunk) = payload.next().await {
                let chunk = chunk.map_err(|e| {
                    ApiError::new(ErrorCode::BadRequest, format!("reading the body: {e}"))
                })?;
                if body.len() + chunk.len() > limit {
                    return Err(ApiError::new(
                        ErrorCode::TooLarge,
                        format!("the request body is over {limit} bytes"),
                    ));
                }
                body.extend_from_slice(&chunk);
            }
            Ok(Body(body))
        })
    }
}

impl Body {
    fn is_blank(&self) -> bool {
        self.0.iter().all(u8::is_ascii_whitespace)
    }

    fn parse<T: DeserializeOwned>(&self) -> Result<T, ApiError> {
        from_json(&self.0).map_err(|message| ApiError::new(ErrorCode::BadRequest, message))
    }
}

/// A JSON request body of type `T` (see [`Body`] for the size limit).
pub(crate) struct JsonBody<T>(pub T);

impl<T: DeserializeOwned + 'static> FromRequest for JsonBody<T> {
    type Error = ApiError;
    type Future = Pin<Box<dyn Future<Output = Result<JsonBody<T>, ApiError>>>>;

    fn from_request(req: &HttpRequest, payload: &mut Payload) -> Self::Future {
        let body = Body::from_request(req, payload);
        Box::pin(async move { body.await?.parse().map(JsonBody) })
    }
}

async fn healthz(state: State) -> HttpResponse {
    let config = state.registry.config();
    let health = Health {
        status: "ok".into(),
        role: Some("active".into()),
        node: matches!(config.store, crate::config::StoreKind::Postgres(_))
            .then(|| config.node_id.clone()),
    };
    json_response(StatusCode::OK, &health)
}

async fn not_found() -> HttpResponse {
    ApiError::new(ErrorCode::NotFound, "no such path").error_response()
}

async fn metrics(_admin: Admin, state: State) -> HttpResponse {
    HttpResponse::Ok()
        .content_type("text/plain; version=0.0.4")
        .body(state.registry.metrics().render())
}

async fn websocket(
    req: HttpRequest,
    stream: web::Payload,
    state: State,
) -> Result<HttpResponse, actix_web::Error> {
    let from_query = web::Query::<TokenQuery>::from_query(req.query_string())
        .ok()
        .and_then(|q| q.into_inner().token);
    let token = bearer(&req).map(str::to_owned).or(from_query);
    let credential = match token.as_deref().map(|t| state.accounts.authenticate(t)) {
        Some(Ok(credential)) => credential,
        Some(Err(refusal)) => return Ok(ApiError::from(refusal).error_response()),
        None => {
            return Ok(
                ApiError::new(ErrorCode::Unauthorized, "a valid user token is required")
                    .error_response(),
            )
        }
    };
    let user = credential.user.clone();
    // A token signed with the secret (the team's backend) creates its user on first connect.
    if let Err(e) = state.registry.ensure_user(&user) {
        return Ok(ApiError::from(e).error_response());
    }
    let Some(permit) = state.registry.presence().admit(&user) else {
        let cap = state.registry.config().max_sessions_per_user;
        return Ok(ApiError::new(
            ErrorCode::TooManySessions,
            format!("{user} already has {cap} sessions open; close one first"),
        )
        .error_response());
    };
    crate::session::upgrade(
        &req,
        stream,
        credential,
        permit,
        Arc::clone(&state.registry),
    )
}
