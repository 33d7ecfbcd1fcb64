//! Named activations: the names a network lists are the ones its forward pass reports, and a
//! pass stopped at a layer reports exactly the layers up to it.

mod common;

use alexvgg_models::{Architecture, ModelError, NetworkShape};
use burn::tensor::{Distribution, Tensor};
use common::*;

#[test]
fn listed_names_are_the_reported_ones_and_a_pass_stops_where_asked() {
    let shape = NetworkShape {
        num_classes: 5,
        hidden: 16,
        width_divisor: 16,
    };
    for arch in Architecture::all() {
        let model = arch.init(&shape, &cpu()).unwrap();
        let side = arch.input_size();
        let x = || Tensor::<4>::ones([1, 3, side, side], &cpu());
        let mut seen = Vec::new();
        model.forward_observed(x(), &mut |n, _| seen.push(n.to_string()));
        let names = model.activation_names();
        assert_eq!(names, seen, "{}", arch.name());
        assert_eq!(names.last().map(String::as_str), Some("fc8"));
        let middle = &names[names.len() / 2];
        let mut until = Vec::new();
        model
            .forward_until(x(), middle, &mut |n, _| until.push(n.to_string()))
            .unwrap();
        let at = names.iter().position(|n| n == middle).unwrap();
        assert_eq!(until, names[..=at].to_vec(), "{}", arch.name());
        let err = model
            .forward_until(x(), "conv9_9", &mut |_, _| {})
            .unwrap_err();
        assert!(matches!(err, ModelError::UnknownLayer { .. }), "{err}");
    }
}

#[test]
fn a_pass_resumed_from_any_activation_gives_the_same_logits() {
    let shape = NetworkShape {
        num_classes: 5,
        hidden: 16,
        width_divisor: 16,
    };
    for arch in Architecture::all() {
        let model = arch.init(&shape, &cpu()).unwrap();
        let side = arch.input_size();
        let x = Tensor::<4>::random([2, 3, side, side], Distribution::Normal(0.0, 50.0), &cpu());
        let mut acts = vec![("input".to_string(), x.clone())];
        let want = values(model.forward_observed(x, &mut |n, t| {
            acts.push((n.to_string(), t.clone()));
        }));
        for (name, act) in acts {
            let got = model
                .forward_from(&name, act)
                .unwrap_or_else(|e| panic!("{} from {name}: {e}", arch.name()));
            assert_close(
                &format!("{} from {name}", arch.name()),
                &values(got),
                &want,
                1e-5,
            );
        }
        let err = model
            .forward_from("conv9_9", Tensor::zeros([1, 3, side, side], &cpu()))
            .unwrap_err();
        assert!(matches!(err, ModelError::UnknownLayer { .. }), "{err}");
        let err = model
            .forward_from("pool1", Tensor::zeros([1, 3, side, side], &cpu()))
            .unwrap_err();
        assert!(matches!(err, ModelError::ActivationShape { .. }), "{err}");
        assert!(err.to_string().contains("pool1"), "{err}");
    }
}
