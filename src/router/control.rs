//! What the control socket does with an envelope that is not a control command: route it as
//! sent by this node's operator and answer with everything that came back.

use dci_peerlet::error_payload;
use dci_proto::{Envelope, Kind, Sender};

use super::MessengerHandle;

/// Routes `request` for a local client and wraps its answers in one reply (see
/// [`Answers::to_payload`](super::Answers::to_payload)).
pub async fn answer(me: &Sender, request: Envelope, messenger: &MessengerHandle) -> Envelope {
    let original = request.clone();
    match messenger.request(request).await {
        Some(answers) => original.reply_to(me.clone(), Kind::Reply, answers.to_payload()),
        None => original.reply_to(
            me.clone(),
            Kind::Error,
            error_payload("stopping", "the agent is shutting down"),
        ),
    }
}
