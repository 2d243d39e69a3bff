//! HTTP routes: the admin API, the `/ws` upgrade, `/healthz`, `/metrics`, and the built-in web
//! client's files (`/`, `/app.js`, `/app.css`, embedded by `web.rs`).
//!
//! Handlers are thin: they authenticate, validate ids, and turn a request into a registry call
//! or a group-actor command; every error leaves as `{"error":{"code","message"}}` with the status
//! of its code (docs/PROTOCOL.md §5). Request bodies are read as bytes and parsed here, so a
//! malformed body gets the same JSON error shape as everything else.

use std::sync::Arc;

use actix_web::http::StatusCode;
use actix_web::{guard, web, HttpRequest, HttpResponse, ResponseError};
use serde::de::DeserializeOwned;
use serde::Deserialize;
use serde_json::json;

use crate::auth::{Auth, DEFAULT_TOKEN_TTL_SECS};
use crate::group::{
    reply_channel, DescribeGroup, FetchMessages, GroupActor, GroupError, ListReaders, Page,
    PostMessage, RemoveMember,
};
use crate::ids::{GroupId, UserId};
use crate::protocol::{check_send, page_limit, to_json, ErrorCode, HttpError, HttpErrorBody};
use crate::registry::{add_member, Registry};
use crate::store::{GroupKindRecord, MemberRecord, StoreError};

/// What every handler shares.
pub struct AppState {
    pub registry: Arc<Registry>,
    pub auth: Auth,
}

type State = web::Data<AppState>;

/// An error answer of the admin API.
#[derive(Debug)]
pub struct ApiError {
    code: ErrorCode,
    message: String,
    /// Overrides the code's usual status (only `DELETE` of a non-member: 404 `not_member`).
    status: Option<StatusCode>,
}

impl ApiError {
    fn new(code: ErrorCode, message: impl Into<String>) -> ApiError {
        ApiError {
            code,
            message: message.into(),
            status: None,
        }
    }
}

impl std::fmt::Display for ApiError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.code.as_str(), self.message)
    }
}

impl ResponseError for ApiError {
    fn status_code(&self) -> StatusCode {
        self.status.unwrap_or_else(|| {
            StatusCode::from_u16(self.code.http_status())
                .unwrap_or(StatusCode::INTERNAL_SERVER_ERROR)
        })
    }

    fn error_response(&self) -> HttpResponse {
        let body = HttpError {
            error: HttpErrorBody {
                code: self.code,
                message: self.message.clone(),
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
        ApiError::new(e.code(), e.message())
    }
}

impl From<actix::MailboxError> for ApiError {
    fn from(e: actix::MailboxError) -> ApiError {
        log::error!("group actor unavailable: {e}");
        ApiError::new(ErrorCode::Internal, "the group is unavailable; retry later")
    }
}

type ApiResult = Result<HttpResponse, ApiError>;

/// Registers every route.
pub fn routes(cfg: &mut web::ServiceConfig) {
    for path in crate::web::ASSET_PATHS {
        cfg.route(
            path,
            web::route()
                .guard(guard::Any(guard::Get()).or(guard::Head()))
                .to(web_asset),
        );
    }
    cfg.route("/healthz", web::get().to(healthz))
        .route("/metrics", web::get().to(metrics))
        .route("/ws", web::get().to(websocket))
        .service(
            web::scope("/api")
                .route("/users", web::post().to(create_user))
                .route("/users/{uid}/tokens", web::post().to(create_token))
                .route("/groups", web::post().to(create_group))
                .route("/groups/{gid}", web::get().to(get_group))
                .route("/groups/{gid}/members/{uid}", web::put().to(put_member))
                .route(
                    "/groups/{gid}/members/{uid}",
                    web::delete().to(delete_member),
                )
                .route("/groups/{gid}/messages", web::post().to(post_message))
                .route("/groups/{gid}/messages", web::get().to(get_messages))
                .route(
                    "/groups/{gid}/messages/{seq}/receipts",
                    web::get().to(get_receipts),
                )
                .default_service(web::to(api_not_found)),
        )
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

fn require_admin(req: &HttpRequest, state: &State) -> Result<(), ApiError> {
    match bearer(req) {
        Some(token) if state.auth.is_admin(token) => Ok(()),
        _ => Err(ApiError::new(
            ErrorCode::Unauthorized,
            "admin token required",
        )),
    }
}

/// Reads a request body, refusing one larger than a JSON-escaped message body of the maximum
/// size could be (actix's own limit would answer with a plain-text 413).
async fn read_body(state: &State, mut payload: web::Payload) -> Result<web::BytesMut, ApiError> {
    use futures_util::StreamExt;
    let limit = state
        .registry
        .config()
        .max_body_bytes
        .saturating_mul(6)
        .saturating_add(64 << 10);
    let mut body = web::BytesMut::new();
    while let Some(chunk) = payload.next().await {
        let chunk = chunk
            .map_err(|e| ApiError::new(ErrorCode::BadFrame, format!("reading the body: {e}")))?;
        if body.len() + chunk.len() > limit {
            return Err(ApiError::new(
                ErrorCode::TooLarge,
                format!("the request body is over {limit} bytes"),
            ));
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}

fn parse_body<T: DeserializeOwned>(body: &[u8]) -> Result<T, ApiError> {
    serde_json::from_slice(body)
        .map_err(|e| ApiError::new(ErrorCode::BadFrame, format!("bad JSON body: {e}")))
}

fn user_id(s: &str) -> Result<UserId, ApiError> {
    UserId::parse(s).map_err(|e| ApiError::new(ErrorCode::BadFrame, e.to_string()))
}

fn group_id(s: &str) -> Result<GroupId, ApiError> {
    GroupId::parse(s).map_err(|e| ApiError::new(ErrorCode::BadFrame, e.to_string()))
}

fn group_actor(state: &State, gid: &GroupId) -> Result<actix::Addr<GroupActor>, ApiError> {
    state
        .registry
        .group(gid)?
        .ok_or_else(|| ApiError::new(ErrorCode::NoSuchGroup, format!("no group {gid}")))
}

fn member_json(user: &UserId, m: &MemberRecord) -> serde_json::Value {
    json!({"user": user.as_str(), "joined_seq": m.joined_seq, "delivered": m.delivered, "read": m.read})
}

fn json_response(status: StatusCode, value: &serde_json::Value) -> HttpResponse {
    HttpResponse::build(status)
        .content_type("application/json")
        .body(value.to_string())
}

/// One of the web client's embedded files. `no-cache` makes the browser revalidate each time
/// (cheap: a matching `If-None-Match` gets `304` without a body), so an upgraded server never
/// runs with an old script.
async fn web_asset(req: HttpRequest) -> HttpResponse {
    let Some(asset) = crate::web::asset_at(req.path()) else {
        return not_found().await;
    };
    let fresh = req
        .headers()
        .get("if-none-match")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|tags| tags.split(',').any(|t| t.trim() == asset.etag));
    let mut response = if fresh {
        HttpResponse::NotModified()
    } else {
        HttpResponse::Ok()
    };
    response
        .insert_header(("Cache-Control", "no-cache"))
        .insert_header(("ETag", asset.etag))
        .insert_header(("X-Content-Type-Options", "nosniff"))
        // The page's URL may carry `?token=`: never send it on as a referrer.
        .insert_header(("Referrer-Policy", "no-referrer"))
        .insert_header((
            "Content-Security-Policy",
            crate::web::CONTENT_SECURITY_POLICY,
        ));
    if fresh {
        response.finish()
    } else {
        response.content_type(asset.content_type).body(asset.body)
    }
}

async fn healthz() -> HttpResponse {
    json_response(StatusCode::OK, &json!({"status": "ok"}))
}

async fn not_found() -> HttpResponse {
    ApiError::new(ErrorCode::NotFound, "no such path").error_response()
}

/// Unknown paths under `/api/` are admin-only too: no token, no information.
async fn api_not_found(req: HttpRequest, state: State) -> ApiResult {
    require_admin(&req, &state)?;
    Err(ApiError::new(ErrorCode::NotFound, "no such path"))
}

async fn metrics(req: HttpRequest, state: State) -> ApiResult {
    require_admin(&req, &state)?;
    Ok(HttpResponse::Ok()
        .content_type("text/plain; version=0.0.4")
        .body(state.registry.metrics().render()))
}

#[derive(Deserialize)]
struct TokenQuery {
    token: Option<String>,
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
    let Some(user) = token.as_deref().and_then(|t| state.auth.verify(t)) else {
        return Ok(
            ApiError::new(ErrorCode::Unauthorized, "a valid user token is required")
                .error_response(),
        );
    };
    if let Err(e) = state.registry.ensure_user(&user) {
        return Ok(ApiError::from(e).error_response());
    }
    let Some(permit) = state.registry.admit_session(&user) else {
        let cap = state.registry.config().max_sessions_per_user;
        return Ok(ApiError::new(
            ErrorCode::TooManySessions,
            format!("{user} already has {cap} sessions open; close one first"),
        )
        .error_response());
    };
    crate::session::upgrade(&req, stream, user, permit, Arc::clone(&state.registry))
}

#[derive(Deserialize)]
struct NewUser {
    id: String,
    name: Option<String>,
}

async fn create_user(req: HttpRequest, state: State, payload: web::Payload) -> ApiResult {
    require_admin(&req, &state)?;
    let body = read_body(&state, payload).await?;
    let new: NewUser = parse_body(&body)?;
    let id = user_id(&new.id)?;
    let name = new.name.unwrap_or_else(|| id.to_string());
    if !state.registry.create_user(&id, &name).await? {
        return Err(ApiError::new(
            ErrorCode::UserExists,
            format!("user {id} exists"),
        ));
    }
    let token = mint(&state, &id, DEFAULT_TOKEN_TTL_SECS)?;
    Ok(json_response(
        StatusCode::CREATED,
        &json!({"id": id.as_str(), "name": name, "token": token}),
    ))
}

fn mint(state: &State, id: &UserId, ttl: u64) -> Result<String, ApiError> {
    state.auth.mint(id, ttl).map_err(|e| {
        log::error!("signing a token failed: {e}");
        ApiError::new(ErrorCode::Internal, "cannot sign a token")
    })
}

#[derive(Deserialize, Default)]
struct TokenRequest {
    ttl_secs: Option<u64>,
}

async fn create_token(
    req: HttpRequest,
    state: State,
    path: web::Path<String>,
    payload: web::Payload,
) -> ApiResult {
    require_admin(&req, &state)?;
    let id = user_id(&path)?;
    let body = read_body(&state, payload).await?;
    let request: TokenRequest = if body.iter().all(u8::is_ascii_whitespace) {
        TokenRequest::default()
    } else {
        parse_body(&body)?
    };
    if state.registry.store().user(&id)?.is_none() {
        return Err(ApiError::new(
            ErrorCode::NoSuchUser,
            format!("no user {id}"),
        ));
    }
    let token = mint(
        &state,
        &id,
        request.ttl_secs.unwrap_or(DEFAULT_TOKEN_TTL_SECS),
    )?;
    Ok(json_response(StatusCode::OK, &json!({"token": token})))
}

#[derive(Deserialize)]
struct NewGroup {
    id: Option<String>,
    name: Option<String>,
    #[serde(default)]
    members: Vec<String>,
}

async fn create_group(req: HttpRequest, state: State, payload: web::Payload) -> ApiResult {
    require_admin(&req, &state)?;
    let body = read_body(&state, payload).await?;
    let new: NewGroup = parse_body(&body)?;
    let id = match &new.id {
        Some(id) => GroupId::parse_plain(id)
            .map_err(|e| ApiError::new(ErrorCode::BadFrame, e.to_string()))?,
        None => GroupId::generate(),
    };
    let members = new
        .members
        .iter()
        .map(|m| user_id(m))
        .collect::<Result<Vec<_>, _>>()?;
    let name = new.name.unwrap_or_else(|| id.to_string());
    let Some(addr) = state
        .registry
        .create_group(&id, &name, GroupKindRecord::Group, &members)
        .await?
    else {
        return Err(ApiError::new(
            ErrorCode::GroupExists,
            format!("group {id} exists"),
        ));
    };
    describe(&id, &addr, StatusCode::CREATED).await
}

async fn describe(id: &GroupId, addr: &actix::Addr<GroupActor>, status: StatusCode) -> ApiResult {
    let view = addr.send(DescribeGroup).await?;
    let members: Vec<serde_json::Value> = view
        .members
        .iter()
        .map(|(u, m)| member_json(u, m))
        .collect();
    Ok(json_response(
        status,
        &json!({"id": id.as_str(), "name": view.name, "kind": view.kind, "last_seq": view.last_seq, "members": members}),
    ))
}

async fn get_group(req: HttpRequest, state: State, path: web::Path<String>) -> ApiResult {
    require_admin(&req, &state)?;
    let id = group_id(&path)?;
    let addr = group_actor(&state, &id)?;
    describe(&id, &addr, StatusCode::OK).await
}

/// The group actor and the user of a `/api/groups/{gid}/members/{uid}` request.
fn member_target(
    req: &HttpRequest,
    state: &State,
    path: web::Path<(String, String)>,
) -> Result<(actix::Addr<GroupActor>, UserId), ApiError> {
    require_admin(req, state)?;
    let (gid, uid) = path.into_inner();
    let (id, user) = (group_id(&gid)?, user_id(&uid)?);
    Ok((group_actor(state, &id)?, user))
}

async fn put_member(
    req: HttpRequest,
    state: State,
    path: web::Path<(String, String)>,
) -> ApiResult {
    let (addr, user) = member_target(&req, &state, path)?;
    state.registry.ensure_user(&user)?;
    let record = add_member(&addr, user.clone()).await?;
    Ok(json_response(StatusCode::OK, &member_json(&user, &record)))
}

async fn delete_member(
    req: HttpRequest,
    state: State,
    path: web::Path<(String, String)>,
) -> ApiResult {
    let (addr, user) = member_target(&req, &state, path)?;
    let (reply, answer) = reply_channel();
    addr.send(RemoveMember { user, reply }).await?;
    match answer.wait().await {
        Ok(()) => Ok(HttpResponse::NoContent().finish()),
        // The member resource does not exist: 404, with the protocol's `not_member` code.
        Err(GroupError::NotMember) => Err(ApiError {
            status: Some(StatusCode::NOT_FOUND),
            ..ApiError::from(GroupError::NotMember)
        }),
        Err(e) => Err(e.into()),
    }
}

#[derive(Deserialize)]
struct NewMessage {
    from: String,
    body: String,
    client_id: Option<String>,
}

async fn post_message(
    req: HttpRequest,
    state: State,
    path: web::Path<String>,
    payload: web::Payload,
) -> ApiResult {
    require_admin(&req, &state)?;
    let id = group_id(&path)?;
    let body = read_body(&state, payload).await?;
    let new: NewMessage = parse_body(&body)?;
    let from = user_id(&new.from)?;
    let client_id = new
        .client_id
        .unwrap_or_else(|| format!("http-{}", crate::auth::random_hex(8)));
    check_send(
        &client_id,
        &new.body,
        state.registry.config().max_body_bytes,
    )
    .map_err(|(code, message)| ApiError::new(code, message))?;
    let addr = group_actor(&state, &id)?;
    let (reply, answer) = reply_channel();
    addr.send(PostMessage {
        from,
        client_id: client_id.clone(),
        body: new.body,
        reply,
    })
    .await?;
    let posted = answer.wait().await?;
    Ok(json_response(
        StatusCode::OK,
        &json!({"seq": posted.seq, "ts": posted.ts, "client_id": client_id, "duplicate": posted.duplicate}),
    ))
}

#[derive(Deserialize)]
struct MessagesQuery {
    #[serde(default)]
    after: u64,
    limit: Option<usize>,
}

async fn get_messages(req: HttpRequest, state: State, path: web::Path<String>) -> ApiResult {
    require_admin(&req, &state)?;
    let id = group_id(&path)?;
    let query = web::Query::<MessagesQuery>::from_query(req.query_string())
        .map_err(|e| ApiError::new(ErrorCode::BadFrame, format!("bad query: {e}")))?;
    let addr = group_actor(&state, &id)?;
    let page = addr
        .send(FetchMessages {
            user: None,
            page: Page::After {
                after: query.after,
                limit: page_limit(query.limit),
            },
        })
        .await??;
    Ok(json_response(
        StatusCode::OK,
        &json!({"group": id.as_str(), "messages": page.messages, "more": page.more, "last_seq": page.last_seq}),
    ))
}

async fn get_receipts(
    req: HttpRequest,
    state: State,
    path: web::Path<(String, String)>,
) -> ApiResult {
    require_admin(&req, &state)?;
    let (gid, seq) = path.into_inner();
    let id = group_id(&gid)?;
    let seq: u64 = seq
        .parse()
        .map_err(|_| ApiError::new(ErrorCode::InvalidSeq, format!("{seq:?} is not a seq")))?;
    let addr = group_actor(&state, &id)?;
    let readers = addr.send(ListReaders { user: None, seq }).await??;
    Ok(json_response(
        StatusCode::OK,
        &serde_json::to_value(&readers).unwrap_or_default(),
    ))
}
