//! The admin API (`/api/...`, docs/PROTOCOL.md §6): every route takes the [`Admin`] extractor,
//! so none runs without the admin token, and reads its body through [`JsonBody`].

use actix::Addr;
use actix_web::http::StatusCode;
use actix_web::{web, HttpRequest, HttpResponse};

use crate::auth::{random_hex, DEFAULT_TOKEN_TTL_SECS};
use crate::group::{
    reply_channel, DescribeGroup, FetchMessages, GroupActor, GroupError, ListReaders, Page,
    PostMessage, RemoveMember, UpdateGroup as UpdateGroupCommand,
};
use crate::ids::{GroupId, UserId};
use crate::protocol::{
    check_send, page_limit, CreatedUser, ErrorCode, GroupInfo, MemberInfo, MessagesQuery,
    MessagesReply, NewGroup, NewMessage, NewUser, PostedMessage, Readers, TokenReply, TokenRequest,
    UpdateGroup, UpdateUser, UserInfo,
};
use crate::registry::add_member;
use crate::store::{GroupKindRecord, GroupSettingsRecord, MemberRecord};

use super::{json_response, Admin, ApiError, ApiResult, Body, JsonBody, State};

/// The `/api` scope.
pub(super) fn scope() -> actix_web::Scope {
    web::scope("/api")
        .route("/users", web::post().to(create_user))
        .route("/users/{uid}/tokens", web::post().to(create_token))
        .route("/users/{uid}", web::get().to(get_user))
        .route("/users/{uid}", web::put().to(put_user))
        .route("/groups", web::post().to(create_group))
        .route("/groups/{gid}", web::get().to(get_group))
        .route("/groups/{gid}", web::put().to(put_group))
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
        .default_service(web::to(api_not_found))
}

fn user_id(s: &str) -> Result<UserId, ApiError> {
    UserId::parse(s).map_err(|e| ApiError::new(ErrorCode::BadFrame, e.to_string()))
}

fn group_id(s: &str) -> Result<GroupId, ApiError> {
    GroupId::parse(s).map_err(|e| ApiError::new(ErrorCode::BadFrame, e.to_string()))
}

fn group_actor(state: &State, gid: &GroupId) -> Result<Addr<GroupActor>, ApiError> {
    state
        .registry
        .group(gid)?
        .ok_or_else(|| ApiError::new(ErrorCode::NoSuchGroup, format!("no group {gid}")))
}

fn member_info(user: &UserId, m: &MemberRecord) -> MemberInfo {
    MemberInfo {
        user: user.to_string(),
        joined_seq: m.joined_seq,
        delivered: m.delivered,
        read: m.read,
    }
}

fn mint(state: &State, id: &UserId, ttl: u64) -> Result<String, ApiError> {
    state.auth.mint(id, ttl).map_err(|e| {
        log::error!("signing a token failed: {e}");
        ApiError::new(ErrorCode::Internal, "cannot sign a token")
    })
}

/// Unknown paths under `/api/` are admin-only too: no token, no information.
async fn api_not_found(_admin: Admin) -> ApiResult {
    Err(ApiError::new(ErrorCode::NotFound, "no such path"))
}

async fn create_user(_admin: Admin, state: State, JsonBody(new): JsonBody<NewUser>) -> ApiResult {
    let id = user_id(&new.id)?;
    let name = new.name.unwrap_or_else(|| id.to_string());
    if !state.registry.create_user(&id, &name).await? {
        return Err(ApiError::new(
            ErrorCode::UserExists,
            format!("user {id} exists"),
        ));
    }
    let token = mint(&state, &id, DEFAULT_TOKEN_TTL_SECS)?;
    let created = CreatedUser {
        id: id.to_string(),
        name,
        token,
    };
    Ok(json_response(StatusCode::CREATED, &created))
}

async fn create_token(
    _admin: Admin,
    state: State,
    path: web::Path<String>,
    body: Body,
) -> ApiResult {
    let id = user_id(&path)?;
    let request: TokenRequest = if body.is_blank() {
        TokenRequest::default()
    } else {
        body.parse()?
    };
    if state.registry.store().user(&id)?.is_none() {
        return Err(ApiError::new(
            ErrorCode::NoSuchUser,
            format!("no user {id}"),
        ));
    }
    let ttl = request.ttl_secs.unwrap_or(DEFAULT_TOKEN_TTL_SECS);
    let token = mint(&state, &id, ttl)?;
    Ok(json_response(StatusCode::OK, &TokenReply { token }))
}

async fn create_group(_admin: Admin, state: State, JsonBody(new): JsonBody<NewGroup>) -> ApiResult {
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
    let settings = GroupSettingsRecord {
        receipts: new.receipts.map(Into::into).unwrap_or_default(),
    };
    let Some(addr) = state
        .registry
        .create_group_with(&id, &name, GroupKindRecord::Group, &members, settings)
        .await?
    else {
        return Err(ApiError::new(
            ErrorCode::GroupExists,
            format!("group {id} exists"),
        ));
    };
    describe(&id, &addr, StatusCode::CREATED).await
}

async fn describe(id: &GroupId, addr: &Addr<GroupActor>, status: StatusCode) -> ApiResult {
    let view = addr.send(DescribeGroup).await?;
    let info = GroupInfo {
        id: id.to_string(),
        name: view.name,
        kind: view.kind.into(),
        receipts: view.receipts.into(),
        last_seq: view.last_seq,
        members: view
            .members
            .iter()
            .map(|(u, m)| member_info(u, m))
            .collect(),
    };
    Ok(json_response(status, &info))
}

async fn get_group(_admin: Admin, state: State, path: web::Path<String>) -> ApiResult {
    let id = group_id(&path)?;
    let addr = group_actor(&state, &id)?;
    describe(&id, &addr, StatusCode::OK).await
}

/// Renames a group and/or changes its receipt policy; answers the group once durable.
async fn put_group(
    _admin: Admin,
    state: State,
    path: web::Path<String>,
    JsonBody(update): JsonBody<UpdateGroup>,
) -> ApiResult {
    let id = group_id(&path)?;
    let name = update.name.map(|name| checked_name(&name)).transpose()?;
    let addr = group_actor(&state, &id)?;
    let (reply, answer) = reply_channel();
    addr.send(UpdateGroupCommand {
        name,
        receipts: update.receipts.map(Into::into),
        reply,
    })
    .await?;
    answer.wait().await?;
    describe(&id, &addr, StatusCode::OK).await
}

/// A group name: 1-100 characters after trimming.
fn checked_name(name: &str) -> Result<String, ApiError> {
    let name = name.trim();
    let n_chars = name.chars().count();
    if (1..=100).contains(&n_chars) {
        Ok(name.to_owned())
    } else {
        Err(ApiError::new(
            ErrorCode::BadFrame,
            format!("a name has 1-100 characters, not {n_chars}"),
        ))
    }
}

fn user_info(state: &State, id: &UserId) -> Result<UserInfo, ApiError> {
    let Some(record) = state.registry.store().user(id)? else {
        return Err(ApiError::new(
            ErrorCode::NoSuchUser,
            format!("no user {id}"),
        ));
    };
    Ok(UserInfo {
        id: id.to_string(),
        name: record.name,
        created_ms: record.created_ms,
        share_reads: state.registry.share_reads(id)?,
    })
}

async fn get_user(_admin: Admin, state: State, path: web::Path<String>) -> ApiResult {
    let id = user_id(&path)?;
    Ok(json_response(StatusCode::OK, &user_info(&state, &id)?))
}

/// Changes a user's settings; answers the user once durable.
async fn put_user(
    _admin: Admin,
    state: State,
    path: web::Path<String>,
    JsonBody(update): JsonBody<UpdateUser>,
) -> ApiResult {
    let id = user_id(&path)?;
    user_info(&state, &id)?;
    if let Some(share_reads) = update.share_reads {
        state.registry.set_share_reads(&id, share_reads).await?;
    }
    Ok(json_response(StatusCode::OK, &user_info(&state, &id)?))
}

/// The group actor and the user of a `/api/groups/{gid}/members/{uid}` request.
fn member_target(
    state: &State,
    path: web::Path<(String, String)>,
) -> Result<(Addr<GroupActor>, UserId), ApiError> {
    let (gid, uid) = path.into_inner();
    let (id, user) = (group_id(&gid)?, user_id(&uid)?);
    // A direct conversation is its two people's: nobody joins or leaves it.
    if let Some(record) = state.registry.store().group(&id)? {
        if record.kind == GroupKindRecord::Direct {
            return Err(ApiError::new(
                ErrorCode::NotAllowed,
                format!("{id} is a direct conversation: its members cannot change"),
            ));
        }
    }
    Ok((group_actor(state, &id)?, user))
}

async fn put_member(_admin: Admin, state: State, path: web::Path<(String, String)>) -> ApiResult {
    let (addr, user) = member_target(&state, path)?;
    state.registry.ensure_user(&user)?;
    let record = add_member(&addr, user.clone()).await?;
    Ok(json_response(StatusCode::OK, &member_info(&user, &record)))
}

async fn delete_member(
    _admin: Admin,
    state: State,
    path: web::Path<(String, String)>,
) -> ApiResult {
    let (gid, _) = path.as_ref().clone();
    let (addr, user) = member_target(&state, path)?;
    let (reply, answer) = reply_channel();
    addr.send(RemoveMember {
        user: user.clone(),
        reply,
    })
    .await?;
    match answer.wait().await {
        Ok(()) => Ok(HttpResponse::NoContent().finish()),
        // The member resource does not exist: 404, with the protocol's `not_member` code, in
        // words about the user named (the WebSocket's "you are not a member" would mislead).
        Err(GroupError::NotMember) => Err(ApiError {
            status: Some(StatusCode::NOT_FOUND),
            ..ApiError::new(
                ErrorCode::NotMember,
                format!("{user} is not a member of {gid}"),
            )
        }),
        Err(e) => Err(e.into()),
    }
}

async fn post_message(
    _admin: Admin,
    state: State,
    path: web::Path<String>,
    JsonBody(new): JsonBody<NewMessage>,
) -> ApiResult {
    let id = group_id(&path)?;
    let from = user_id(&new.from)?;
    let client_id = new
        .client_id
        .unwrap_or_else(|| format!("http-{}", random_hex(8)));
    check_send(
        &client_id,
        &new.body,
        state.registry.config().max_body_bytes,
    )?;
    let addr = group_actor(&state, &id)?;
    let (reply, answer) = reply_channel();
    addr.send(PostMessage {
        remind_after: None,
        from,
        client_id: client_id.clone(),
        body: new.body,
        reply,
    })
    .await?;
    let posted = answer.wait().await?;
    let reply = PostedMessage {
        seq: posted.seq,
        ts: posted.ts,
        client_id,
        duplicate: posted.duplicate,
    };
    Ok(json_response(StatusCode::OK, &reply))
}

async fn get_messages(
    _admin: Admin,
    req: HttpRequest,
    state: State,
    path: web::Path<String>,
) -> ApiResult {
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
    let reply = MessagesReply {
        group: id.to_string(),
        messages: page.messages.into_iter().map(Into::into).collect(),
        more: page.more,
        last_seq: page.last_seq,
    };
    Ok(json_response(StatusCode::OK, &reply))
}

async fn get_receipts(_admin: Admin, state: State, path: web::Path<(String, String)>) -> ApiResult {
    let (gid, seq) = path.into_inner();
    let id = group_id(&gid)?;
    let seq: u64 = seq
        .parse()
        .map_err(|_| ApiError::new(ErrorCode::InvalidSeq, format!("{seq:?} is not a seq")))?;
    let addr = group_actor(&state, &id)?;
    let readers: Readers = addr.send(ListReaders { user: None, seq }).await??.into();
    Ok(json_response(StatusCode::OK, &readers))
}
