//! The admin API (`/api/...`, docs/PROTOCOL.md §6): every route takes the [`Admin`] extractor,
//! so none runs without the admin token, and reads its body through [`JsonBody`].

use actix::Addr;
use actix_web::http::StatusCode;
use actix_web::{web, HttpRequest, HttpResponse};

use crate::auth::{
    password, random_hex, DEFAULT_LINK_TTL_SECS, DEFAULT_TOKEN_TTL_SECS, MAX_TOKEN_TTL_SECS,
};
use crate::group::{
    reply_channel, AuditReceipts, By, DescribeGroup, FetchMessages, GroupActor, GroupError,
    ListMembers, ListReaders, MemberView, Page, PostMessage, RemoveMember, SetRole,
    UpdateGroup as UpdateGroupCommand,
};
use crate::ids::{GroupId, UserId};
use crate::protocol::{
    check_name, check_send, page_limit, AuditQuery, AuditReply, BackupReply, BackupRequest,
    CreatedUser, ErrorCode, GroupEntry, GroupInfo, GroupList, ListQuery, LoginLink, MemberInfo,
    MemberUpdate, MessagesQuery, MessagesReply, NewGroup, NewMessage, NewUser, PostedMessage,
    Readers, Refusal, TokenReply, TokenRequest, UpdateGroup, UpdateUser, UserInfo, UserList,
    MAX_RETENTION_SECS,
};
use crate::registry::add_member;
use crate::store::{now_ms, GroupKindRecord, GroupSettingsRecord, RetentionRecord, UserRecord};

use super::{json_response, Admin, ApiError, ApiResult, Body, JsonBody, State};

/// The `/api` scope.
pub(super) fn scope() -> actix_web::Scope {
    web::scope("/api")
        .route("/login", web::post().to(super::account::login))
        .route(
            "/me/password",
            web::post().to(super::account::change_password),
        )
        .route("/users", web::post().to(create_user))
        .route("/users", web::get().to(list_users))
        .route("/users/{uid}/tokens", web::post().to(create_token))
        .route("/users/{uid}/login-link", web::post().to(create_login_link))
        .route("/users/{uid}/revoke", web::post().to(revoke))
        .route("/users/{uid}", web::get().to(get_user))
        .route("/users/{uid}", web::put().to(put_user))
        .route("/groups", web::post().to(create_group))
        .route("/groups", web::get().to(list_groups))
        .route("/groups/{gid}", web::get().to(get_group))
        .route("/groups/{gid}", web::put().to(put_group))
        .route("/groups/{gid}", web::delete().to(delete_group))
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
        .route("/groups/{gid}/audit", web::get().to(audit))
        .route("/backup", web::post().to(backup))
        .default_service(web::to(api_not_found))
}

fn user_id(s: &str) -> Result<UserId, ApiError> {
    UserId::parse(s).map_err(|e| ApiError::new(ErrorCode::BadRequest, e.to_string()))
}

fn group_id(s: &str) -> Result<GroupId, ApiError> {
    GroupId::parse(s).map_err(|e| ApiError::new(ErrorCode::BadRequest, e.to_string()))
}

fn group_actor(state: &State, gid: &GroupId) -> Result<Addr<GroupActor>, ApiError> {
    state
        .registry
        .group(gid)?
        .ok_or_else(|| ApiError::new(ErrorCode::NoSuchGroup, format!("no group {gid}")))
}

fn member_info(state: &State, user: &UserId, m: &MemberView) -> Result<MemberInfo, ApiError> {
    Ok(MemberInfo {
        user: user.to_string(),
        name: state.registry.display_name(user)?,
        role: m.role.into(),
        joined_seq: m.record.joined_seq,
        delivered: m.record.delivered,
        read: m.record.read,
    })
}

/// A query string parsed as `T`; unknown or malformed parameters are `bad_request`.
fn query<T: serde::de::DeserializeOwned>(req: &HttpRequest) -> Result<T, ApiError> {
    web::Query::<T>::from_query(req.query_string())
        .map(web::Query::into_inner)
        .map_err(|e| ApiError::new(ErrorCode::BadRequest, format!("bad query: {e}")))
}

/// A listing's query: the id to list after (absent or empty: from the first), parsed by
/// `parse`, and the page size.
fn list_query<T>(
    req: &HttpRequest,
    parse: fn(&str) -> Result<T, ApiError>,
) -> Result<(Option<T>, usize), ApiError> {
    let q: ListQuery = query(req)?;
    let after = q
        .after
        .as_deref()
        .filter(|a| !a.is_empty())
        .map(parse)
        .transpose()?;
    Ok((after, page_limit(q.limit)))
}

/// A body that may be empty (then `T::default()`).
fn optional_body<T: serde::de::DeserializeOwned + Default>(body: &Body) -> Result<T, ApiError> {
    if body.is_blank() {
        Ok(T::default())
    } else {
        body.parse()
    }
}

/// A token lifetime: 1 s to [`MAX_TOKEN_TTL_SECS`] (a year), `default` when absent.
fn checked_ttl(ttl_secs: Option<u64>, default: u64) -> Result<u64, ApiError> {
    match ttl_secs {
        None => Ok(default),
        Some(ttl) if (1..=MAX_TOKEN_TTL_SECS).contains(&ttl) => Ok(ttl),
        Some(ttl) => Err(ApiError::new(
            ErrorCode::BadRequest,
            format!("ttl_secs must be 1-{MAX_TOKEN_TTL_SECS} (a year), not {ttl}"),
        )),
    }
}

/// Unknown paths under `/api/` are admin-only too: no token, no information.
async fn api_not_found(_admin: Admin) -> ApiResult {
    Err(ApiError::new(ErrorCode::NotFound, "no such path"))
}

async fn create_user(_admin: Admin, state: State, JsonBody(new): JsonBody<NewUser>) -> ApiResult {
    let id = user_id(&new.id)?;
    let name = match new.name {
        Some(name) => check_name(&name)?,
        None => id.to_string(),
    };
    if let Some(why) = new.password.as_deref().and_then(password::check_new) {
        return Err(ApiError::new(ErrorCode::BadRequest, why));
    }
    if !state.accounts.create_user(&id, &name, new.password).await? {
        return Err(ApiError::new(
            ErrorCode::UserExists,
            format!("user {id} exists"),
        ));
    }
    let token = state.accounts.token(&id, DEFAULT_TOKEN_TTL_SECS)?;
    let created = CreatedUser {
        id: id.to_string(),
        name,
        token,
    };
    Ok(json_response(StatusCode::CREATED, &created))
}

async fn list_users(_admin: Admin, req: HttpRequest, state: State) -> ApiResult {
    let (after, limit) = list_query(&req, user_id)?;
    let mut page = state.registry.store().users(after.as_ref(), limit + 1)?;
    let more = page.len() > limit;
    page.truncate(limit);
    let users = page
        .iter()
        .map(|(id, record)| user_info_of(&state, id, record.clone()))
        .collect::<Result<_, _>>()?;
    Ok(json_response(StatusCode::OK, &UserList { users, more }))
}

/// The existing user `id` (else `404 no_such_user`).
fn existing_user(state: &State, id: &UserId) -> Result<UserRecord, ApiError> {
    state
        .registry
        .store()
        .user(id)?
        .ok_or_else(|| ApiError::new(ErrorCode::NoSuchUser, format!("no user {id}")))
}

async fn create_token(
    _admin: Admin,
    state: State,
    path: web::Path<String>,
    body: Body,
) -> ApiResult {
    let id = user_id(&path)?;
    let request: TokenRequest = optional_body(&body)?;
    let ttl = checked_ttl(request.ttl_secs, DEFAULT_TOKEN_TTL_SECS)?;
    existing_user(&state, &id)?;
    let token = state.accounts.token(&id, ttl)?;
    Ok(json_response(StatusCode::OK, &TokenReply { token }))
}

async fn create_login_link(
    _admin: Admin,
    state: State,
    path: web::Path<String>,
    body: Body,
) -> ApiResult {
    let id = user_id(&path)?;
    let request: TokenRequest = optional_body(&body)?;
    let ttl = checked_ttl(request.ttl_secs, DEFAULT_LINK_TTL_SECS)?;
    let link = state.accounts.mint_link(&id, ttl).await?;
    let reply = LoginLink {
        path: format!("/?link={link}"),
        link,
        expires_ms: now_ms().saturating_add(ttl.saturating_mul(1000)),
    };
    Ok(json_response(StatusCode::OK, &reply))
}

async fn revoke(_admin: Admin, state: State, path: web::Path<String>) -> ApiResult {
    let id = user_id(&path)?;
    state.accounts.revoke(&id).await?;
    Ok(HttpResponse::NoContent().finish())
}

async fn create_group(_admin: Admin, state: State, JsonBody(new): JsonBody<NewGroup>) -> ApiResult {
    let id = match &new.id {
        Some(id) => GroupId::parse_plain(id)
            .map_err(|e| ApiError::new(ErrorCode::BadRequest, e.to_string()))?,
        None => GroupId::generate(),
    };
    let mut members = Vec::with_capacity(new.members.len());
    for member in &new.members {
        let member = user_id(member)?;
        if !members.contains(&member) {
            members.push(member);
        }
    }
    if members.is_empty() {
        return Err(ApiError::new(
            ErrorCode::BadRequest,
            "a group needs at least one member",
        ));
    }
    let owner = match &new.owner {
        Some(owner) => {
            let owner = user_id(owner)?;
            if !members.contains(&owner) {
                return Err(ApiError::new(
                    ErrorCode::BadRequest,
                    format!("the owner {owner} must be one of the members"),
                ));
            }
            owner
        }
        None => members[0].clone(),
    };
    let name = match new.name {
        Some(name) => check_name(&name)?,
        None => id.to_string(),
    };
    state.registry.check_users(&members)?;
    let settings = GroupSettingsRecord {
        receipts: new.receipts.map(Into::into).unwrap_or_default(),
    };
    let Some(addr) = state
        .registry
        .create_group_with(
            &id,
            &name,
            GroupKindRecord::Group,
            &members,
            settings,
            Some(&owner),
        )
        .await?
    else {
        return Err(ApiError::new(
            ErrorCode::GroupExists,
            format!("group {id} exists (or existed: a deleted group's id is not reused)"),
        ));
    };
    describe(&state, &id, &addr, StatusCode::CREATED).await
}

async fn list_groups(_admin: Admin, req: HttpRequest, state: State) -> ApiResult {
    let (after, limit) = list_query(&req, group_id)?;
    let store = state.registry.store();
    let mut page = store.groups(after.as_ref(), limit + 1)?;
    let more = page.len() > limit;
    page.truncate(limit);
    let mut groups = Vec::with_capacity(page.len());
    for (id, record) in page {
        let settings = store.group_settings(&id)?.unwrap_or_default();
        groups.push(GroupEntry {
            id: id.to_string(),
            name: record.name,
            kind: record.kind.into(),
            receipts: settings.receipts.into(),
            created_ms: record.created_ms,
            last_seq: store.last_seq(&id)?.0,
            first_seq: store.first_seq(&id)?.0,
            members: u64::try_from(store.members(&id)?.len()).unwrap_or(u64::MAX),
        });
    }
    Ok(json_response(StatusCode::OK, &GroupList { groups, more }))
}

async fn describe(
    state: &State,
    id: &GroupId,
    addr: &Addr<GroupActor>,
    status: StatusCode,
) -> ApiResult {
    let view = addr.send(DescribeGroup).await?;
    let info = GroupInfo {
        id: id.to_string(),
        name: view.name,
        kind: view.kind.into(),
        receipts: view.receipts.into(),
        last_seq: view.last_seq,
        first_seq: view.first_seq,
        retention_secs: match view.retention {
            Some(own) => own.secs,
            None => state.registry.config().retention.map(|r| r.as_secs()),
        },
        members: view
            .members
            .iter()
            .map(|(u, m)| member_info(state, u, m))
            .collect::<Result<_, _>>()?,
    };
    Ok(json_response(status, &info))
}

async fn get_group(_admin: Admin, state: State, path: web::Path<String>) -> ApiResult {
    let id = group_id(&path)?;
    let addr = group_actor(&state, &id)?;
    describe(&state, &id, &addr, StatusCode::OK).await
}

/// Refuses changing a direct conversation's members, name or existence.
fn refuse_direct(state: &State, id: &GroupId, what: &str) -> Result<(), ApiError> {
    match state.registry.store().group(id)? {
        Some(record) if record.kind == GroupKindRecord::Direct => Err(ApiError::new(
            ErrorCode::NotAllowed,
            format!("{id} is a direct conversation: {what}"),
        )),
        _ => Ok(()),
    }
}

/// Renames a group and/or changes its receipt policy; answers the group once durable.
async fn put_group(
    _admin: Admin,
    state: State,
    path: web::Path<String>,
    JsonBody(update): JsonBody<UpdateGroup>,
) -> ApiResult {
    let id = group_id(&path)?;
    let name = update.name.map(|name| check_name(&name)).transpose()?;
    if name.is_some() {
        refuse_direct(&state, &id, "it has no name of its own to change")?;
    }
    let retention = match update.retention_secs {
        Some(Some(secs)) if secs == 0 || secs > MAX_RETENTION_SECS => {
            return Err(ApiError::new(
                ErrorCode::BadRequest,
                format!("retention_secs is 1 to {MAX_RETENTION_SECS}, or null for forever"),
            ));
        }
        Some(secs) => Some(RetentionRecord { secs }),
        None => None,
    };
    let addr = group_actor(&state, &id)?;
    let (reply, answer) = reply_channel();
    addr.send(UpdateGroupCommand {
        name,
        retention,
        receipts: update.receipts.map(Into::into),
        by: By::Admin,
        reply,
    })
    .await?;
    answer.wait().await?;
    describe(&state, &id, &addr, StatusCode::OK).await
}

/// Deletes a group for good (204); a direct conversation cannot be deleted (its id is its two
/// people's, and a deleted id is never handed out again).
async fn delete_group(_admin: Admin, state: State, path: web::Path<String>) -> ApiResult {
    let id = group_id(&path)?;
    refuse_direct(&state, &id, "it cannot be deleted")?;
    group_actor(&state, &id)?;
    state.registry.delete_group(&id).await?;
    Ok(HttpResponse::NoContent().finish())
}

fn user_info_of(state: &State, id: &UserId, record: UserRecord) -> Result<UserInfo, ApiError> {
    let account = state.accounts.account(id)?;
    Ok(UserInfo {
        id: id.to_string(),
        name: record.name,
        created_ms: record.created_ms,
        deactivated: account.deactivated,
        share_reads: state.registry.share_reads(id)?,
        has_password: account.password.is_some(),
    })
}

fn user_info(state: &State, id: &UserId) -> Result<UserInfo, ApiError> {
    let record = existing_user(state, id)?;
    user_info_of(state, id, record)
}

async fn get_user(_admin: Admin, state: State, path: web::Path<String>) -> ApiResult {
    let id = user_id(&path)?;
    Ok(json_response(StatusCode::OK, &user_info(&state, &id)?))
}

/// Changes a user's name, password, deactivation or settings; answers the user once durable.
async fn put_user(
    _admin: Admin,
    state: State,
    path: web::Path<String>,
    JsonBody(update): JsonBody<UpdateUser>,
) -> ApiResult {
    let id = user_id(&path)?;
    let name = update.name.map(|name| check_name(&name)).transpose()?;
    if let Some(why) = update.password.as_deref().and_then(password::check_new) {
        return Err(ApiError::new(ErrorCode::BadRequest, why));
    }
    existing_user(&state, &id)?;
    if name.is_some() || update.password.is_some() || update.deactivated.is_some() {
        state
            .accounts
            .update(&id, name, update.password, update.deactivated)
            .await?;
    }
    if let Some(share_reads) = update.share_reads {
        state.registry.set_share_reads(&id, share_reads).await?;
    }
    Ok(json_response(StatusCode::OK, &user_info(&state, &id)?))
}

/// The group actor and the user of a `/api/groups/{gid}/members/{uid}` request.
fn member_target(
    state: &State,
    path: web::Path<(String, String)>,
) -> Result<(GroupId, Addr<GroupActor>, UserId), ApiError> {
    let (gid, uid) = path.into_inner();
    let (id, user) = (group_id(&gid)?, user_id(&uid)?);
    // A direct conversation is its two people's: nobody joins or leaves it.
    refuse_direct(state, &id, "its members cannot change")?;
    let addr = group_actor(state, &id)?;
    Ok((id, addr, user))
}

/// Adds a member (idempotent) and/or sets its role (`{"role"}`).
async fn put_member(
    _admin: Admin,
    state: State,
    path: web::Path<(String, String)>,
    body: Body,
) -> ApiResult {
    let update: MemberUpdate = optional_body(&body)?;
    let (id, addr, user) = member_target(&state, path)?;
    state.registry.check_users(std::slice::from_ref(&user))?;
    add_member(&addr, user.clone(), By::Admin).await?;
    if let Some(role) = update.role {
        let (reply, answer) = reply_channel();
        addr.send(SetRole {
            user: user.clone(),
            role: role.into(),
            by: By::Admin,
            reply,
        })
        .await?;
        answer.wait().await?;
    }
    let members = addr.send(ListMembers { user: None }).await??;
    let view = members
        .into_iter()
        .find_map(|(u, view)| (u == user).then_some(view))
        .ok_or_else(|| {
            ApiError::new(
                ErrorCode::NotMember,
                format!("{user} was removed from {id} meanwhile"),
            )
        })?;
    Ok(json_response(
        StatusCode::OK,
        &member_info(&state, &user, &view)?,
    ))
}

async fn delete_member(
    _admin: Admin,
    state: State,
    path: web::Path<(String, String)>,
) -> ApiResult {
    let (id, addr, user) = member_target(&state, path)?;
    let (reply, answer) = reply_channel();
    addr.send(RemoveMember {
        user: user.clone(),
        by: By::Admin,
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
                format!("{user} is not a member of {id}"),
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
        reply_to: None,
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
    let query: MessagesQuery = query(&req)?;
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
        first_seq: page.first_seq,
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

/// The receipt audit of a group's newest live messages (`?limit=`, default 100, at most 1,000).
async fn audit(
    _admin: Admin,
    req: HttpRequest,
    state: State,
    path: web::Path<String>,
) -> ApiResult {
    let id = group_id(&path)?;
    let query: AuditQuery = query(&req)?;
    let addr = group_actor(&state, &id)?;
    let audit = addr
        .send(AuditReceipts {
            limit: page_limit(query.limit),
        })
        .await??;
    Ok(json_response(StatusCode::OK, &AuditReply::from(audit)))
}

/// An online backup; answers once the snapshot is durable and in place.
async fn backup(_admin: Admin, state: State, body: Body) -> ApiResult {
    let BackupRequest {} = optional_body(&body)?;
    if matches!(
        state.registry.config().store,
        crate::config::StoreKind::Postgres(_)
    ) {
        return Err(ApiError::new(
            ErrorCode::BadRequest,
            "the online backup copies a sled data directory; this server runs on PostgreSQL: \
             back it up with PostgreSQL's tools (pg_dump, base backups, a standby)",
        ));
    }
    let done = state
        .backups
        .run(&state.registry)
        .await
        .map_err(Refusal::from)?;
    let reply = BackupReply {
        path: done.path.display().to_string(),
        groups: done.groups,
        messages: done.messages,
        bytes: done.bytes,
        longest_pause_ms: done.longest_pause.as_secs_f64() * 1000.0,
    };
    Ok(json_response(StatusCode::OK, &reply))
}
