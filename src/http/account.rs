//! The routes a user calls without the admin token: `POST /api/login` (a password or a
//! sign-in link) and `POST /api/me/password` (with the user's own bearer token).

use actix_web::http::StatusCode;

use crate::protocol::{ErrorCode, LoggedIn, Login, PasswordChange, TokenReply};

use super::{json_response, ApiError, ApiResult, JsonBody, State, User};

/// `POST /api/login`: `{"user","password"}` or `{"link"}` → `{"user","token"}`.
pub(super) async fn login(state: State, JsonBody(login): JsonBody<Login>) -> ApiResult {
    let (user, token) = match login {
        Login {
            link: Some(link),
            user: None,
            password: None,
        } => state.accounts.redeem_link(&link).await?,
        Login {
            link: None,
            user: Some(user),
            password: Some(password),
        } => state.accounts.login(&user, password).await?,
        _ => {
            return Err(ApiError::new(
                ErrorCode::BadRequest,
                "send {\"user\", \"password\"} or {\"link\"}",
            ))
        }
    };
    let reply = LoggedIn {
        user: user.to_string(),
        token,
    };
    Ok(json_response(StatusCode::OK, &reply))
}

/// `POST /api/me/password`: `{"old","new"}` → `{"token"}`; every earlier token is refused.
pub(super) async fn change_password(
    User(credential): User,
    state: State,
    JsonBody(change): JsonBody<PasswordChange>,
) -> ApiResult {
    let token = state
        .accounts
        .change_password(&credential, change.old, change.new)
        .await?;
    Ok(json_response(StatusCode::OK, &TokenReply { token }))
}
