//! Conversations Credentials: the shared handlers at `/v1/Credentials` (update accepts `Type`).
//!
//! May depend on: api::common::credentials.

use crate::api::common::credentials::CredentialMount;

pub struct ConversationsCredentials;

impl CredentialMount for ConversationsCredentials {
    const PATH: &'static str = "/v1/Credentials";
    const MAX_PAGE_SIZE: u32 = 100;
    const TYPE_ON_UPDATE: bool = true;
}
