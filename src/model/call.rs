//! A call's state and quality as clients report them: the grade, the raw numbers, the
//! WebRTC connection state. The core keeps them per room; the wire carries them both ways.

use serde::{Deserialize, Serialize};

use super::errors::Reject;

/// A call-quality grade.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub(crate) enum Quality {
    /// Loss < 1 %, RTT < 100 ms, bandwidth > 500 kbit/s.
    Excellent,
    /// Loss < 3 %, RTT < 200 ms, bandwidth > 300 kbit/s.
    Good,
    /// Loss < 5 %, RTT < 400 ms, bandwidth > 150 kbit/s.
    Fair,
    /// Anything worse.
    Poor,
}

/// Raw call statistics as a client measured them. All optional; all non-negative and finite.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct QualityStats {
    /// Round-trip time in ms (`rtt` is accepted too).
    #[serde(skip_serializing_if = "Option::is_none", alias = "rtt")]
    pub latency: Option<f64>,
    /// Packet loss in percent.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub packet_loss: Option<f64>,
    /// Available bandwidth in kbit/s.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub bandwidth: Option<f64>,
    /// Jitter in ms.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub jitter: Option<f64>,
    /// When the client measured, ms since the epoch.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub timestamp: Option<f64>,
}

impl QualityStats {
    /// Refuses numbers that are negative or not finite, and a loss over 100 %.
    pub(crate) fn validate(&self) -> Result<(), Reject> {
        for (name, v) in [
            ("latency", self.latency),
            ("packetLoss", self.packet_loss),
            ("bandwidth", self.bandwidth),
            ("jitter", self.jitter),
            ("timestamp", self.timestamp),
        ] {
            if let Some(v) = v
                && !(v.is_finite() && v >= 0.0)
            {
                return Err(Reject::invalid(format!(
                    "stats.{name} must be a non-negative number"
                )));
            }
        }
        if let Some(loss) = self.packet_loss
            && loss > 100.0
        {
            return Err(Reject::invalid("stats.packetLoss is a percentage (0-100)"));
        }
        Ok(())
    }
}

/// A WebRTC connection state as a client reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub(crate) enum ConnectionState {
    /// ICE/DTLS in progress.
    Connecting,
    /// Media flowing.
    Connected,
    /// Lost, may recover.
    Disconnected,
    /// Gave up.
    Failed,
}
