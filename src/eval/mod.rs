//! Judging samples: a domain classifier (the judge) turns images into features and class
//! probabilities; [`stats`] turns those into FID, KID, precision/recall, an Inception-Score
//! analogue and class coverage.

pub mod stats;
