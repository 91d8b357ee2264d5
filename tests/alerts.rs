//! Failure alerts fire on a constructed failing run: the discriminator's learning rate 100 times
//! too high (0.02), which drives G's loss up and keeps it there.

mod common;

use gantry::alerts::{self, AlertKind};
use gantry::train;

#[test]
fn discriminator_learning_rate_100x_too_high_raises_an_alert() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("hot");
    let mut config = common::tiny_config(1200, 400, 0);
    config.train.lr_d = Some(config.train.lr_d() * 100.0);
    train::train(&config, &out).unwrap();
    let raised = alerts::load(&out.join("alerts.json")).unwrap();
    let kinds: Vec<AlertKind> = raised.iter().map(|a| a.kind).collect();
    assert!(kinds.contains(&AlertKind::GeneratorLossRunaway), "{raised:?}");
    let runaway = raised.iter().find(|a| a.kind == AlertKind::GeneratorLossRunaway).unwrap();
    assert!(runaway.began_at < 200 && runaway.raised_at >= runaway.began_at + 999, "{runaway:?}");
}
