//! Chat v1 and v2 Credentials: the shared handlers of `api::common::credentials`.
//!
//! May depend on: api::common::credentials.

use crate::api::common::credentials::CredentialMount;

pub struct ChatV2Credentials;

impl CredentialMount for ChatV2Credentials {
    const PATH: &'static str = "/v2/Credentials";
    const MAX_PAGE_SIZE: u32 = 1000;
    const TYPE_ON_UPDATE: bool = false;
}

pub struct ChatV1Credentials;

impl CredentialMount for ChatV1Credentials {
    const PATH: &'static str = "/v1/Credentials";
    const MAX_PAGE_SIZE: u32 = 1000;
    const TYPE_ON_UPDATE: bool = false;
}
