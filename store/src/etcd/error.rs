//! How etcd's errors are told apart: transient (retry) or a specific answer.

/// Whether an error may go away by retrying (possibly on another endpoint).
pub fn is_transient(e: &etcd_client::Error) -> bool {
    use tonic::Code;
    match e {
        etcd_client::Error::TransportError(_) | etcd_client::Error::IoError(_) => true,
        etcd_client::Error::WatchError(_) => true,
        etcd_client::Error::GRpcStatus(s) => match s.code() {
            Code::Unavailable
            | Code::DeadlineExceeded
            | Code::Aborted
            | Code::ResourceExhausted
            | Code::Cancelled
            | Code::Unknown => true,
            Code::Internal => {
                let m = s.message();
                m.contains("transport") || m.contains("connection") || m.contains("h2")
            }
            _ => false,
        },
        _ => false,
    }
}

fn grpc_message(e: &etcd_client::Error) -> &str {
    match e {
        etcd_client::Error::GRpcStatus(s) => s.message(),
        etcd_client::Error::LeaseKeepAliveError(m) => m,
        _ => "",
    }
}

pub(super) fn is_compacted(e: &etcd_client::Error) -> bool {
    grpc_message(e).contains("required revision has been compacted")
}

pub(super) fn is_future_rev(e: &etcd_client::Error) -> bool {
    grpc_message(e).contains("required revision is a future revision")
}

pub(super) fn is_lease_not_found(e: &etcd_client::Error) -> bool {
    grpc_message(e).contains("lease not found")
}
