//! Adam and RMSProp with their state in the open, so that a training checkpoint holds it.
//!
//! tch's optimisers keep their moment estimates inside libtorch with no way to read them, so
//! a run resumed from `last/` used to restart them from zero: a jolt of full-size steps. These
//! are libtorch's update rules (`torch::optim::Adam` and `RMSprop` without momentum, L2
//! weight decay added to the gradient; a test steps both side by side), and
//! [`Optimizer::save`] / [`Optimizer::load`] carry their state to and from a safetensors file.

use std::collections::HashMap;
use std::path::Path;

use tch::nn::VarStore;
use tch::{Kind, Tensor};

use crate::error::{Error, Result};

/// Which update rule, with libtorch's default constants.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Rule {
    Adam,
    RmsProp,
}

const ADAM_BETAS: (f64, f64) = (0.9, 0.999);
const RMSPROP_ALPHA: f64 = 0.99;
const EPS: f64 = 1e-8;

impl Rule {
    /// The config's `optimizer.kind`: `adam` or `rmsprop`.
    pub fn from_kind(kind: &str) -> Option<Rule> {
        match kind {
            "adam" => Some(Rule::Adam),
            "rmsprop" => Some(Rule::RmsProp),
            _ => None,
        }
    }

    /// The names its state tensors are saved under (then `/` and the variable's name).
    fn state_names(self) -> &'static [&'static str] {
        match self {
            Rule::Adam => &["exp_avg", "exp_avg_sq"],
            Rule::RmsProp => &["square_avg"],
        }
    }
}

/// One trainable variable and its state: Adam's first and second moment estimates, or
/// RMSProp's running mean square; laid out like the variable.
struct Param {
    name: String,
    var: Tensor,
    state: Vec<Tensor>,
    /// Steps this variable took.
    steps: i64,
}

pub struct Optimizer {
    rule: Rule,
    lr: f64,
    weight_decay: f64,
    params: Vec<Param>,
    /// Steps taken in all (saved, to match the state to its checkpoint).
    steps: u64,
}

impl Optimizer {
    /// Steps the trainable variables of `vs` as they are now (build it after any change of
    /// layout, which `zeros_like` then follows).
    pub fn new(rule: Rule, vs: &VarStore, lr: f64, weight_decay: f64) -> Optimizer {
        let _guard = tch::no_grad_guard();
        let mut params: Vec<Param> = vs
            .variables()
            .into_iter()
            .filter(|(_, var)| var.requires_grad())
            .map(|(name, var)| Param {
                state: rule
                    .state_names()
                    .iter()
                    .map(|_| var.zeros_like())
                    .collect(),
                name,
                var,
                steps: 0,
            })
            .collect();
        params.sort_by(|a, b| a.name.cmp(&b.name));
        Optimizer {
            rule,
            lr,
            weight_decay,
            params,
            steps: 0,
        }
    }

    /// Steps taken, counting those of the state it loaded.
    pub fn steps(&self) -> u64 {
        self.steps
    }

    pub fn set_lr(&mut self, lr: f64) {
        self.lr = lr;
    }

    /// Gradients of `loss`, then one step; `false`, and nothing stepped, when a gradient is
    /// not finite.
    pub fn backward_step(&mut self, loss: &Tensor) -> bool {
        for p in &mut self.params {
            p.var.zero_grad();
        }
        loss.backward();
        if !self.gradients_finite() {
            return false;
        }
        self.step();
        true
    }

    /// Whether every gradient the variables hold is finite (one device round trip).
    fn gradients_finite(&self) -> bool {
        let _guard = tch::no_grad_guard();
        let finite: Vec<Tensor> = self
            .params
            .iter()
            .map(|p| p.var.grad())
            .filter(|g| g.defined())
            .map(|g| g.isfinite().all())
            .collect();
        finite.is_empty() || Tensor::stack(&finite, 0).all().int64_value(&[]) != 0
    }

    /// One step along the gradients the variables hold.
    pub fn step(&mut self) {
        let _guard = tch::no_grad_guard();
        self.steps += 1;
        for p in &mut self.params {
            // No gradient yet: not stepped (as in libtorch). Once it has stepped, tch's
            // zero_grad keeps a zero-filled gradient where libtorch would drop it, so a batch
            // that does not reach the variable (a depth head on a batch without depth)
            // still decays it and moves its moments; a process that has just resumed has no
            // gradient there at all and must do the same.
            let grad = match p.var.grad() {
                g if g.defined() => g,
                _ if p.steps > 0 => p.var.zeros_like(),
                _ => continue,
            };
            let grad = if self.weight_decay != 0.0 {
                &grad + &p.var * self.weight_decay
            } else {
                grad
            };
            p.steps += 1;
            match self.rule {
                Rule::Adam => {
                    let (beta1, beta2) = ADAM_BETAS;
                    let correction1 = 1.0 - beta1.powi(p.steps as i32);
                    let correction2 = 1.0 - beta2.powi(p.steps as i32);
                    let (m, v) = p.state.split_at_mut(1);
                    let (m, v) = (&mut m[0], &mut v[0]);
                    let _ = m.g_mul_scalar_(beta1).g_add_(&(&grad * (1.0 - beta1)));
                    let _ = v
                        .g_mul_scalar_(beta2)
                        .g_add_(&(&grad * &grad * (1.0 - beta2)));
                    let denom = v.sqrt() / correction2.sqrt() + EPS;
                    let _ = p.var.g_sub_(&(&*m / denom * (self.lr / correction1)));
                }
                Rule::RmsProp => {
                    let square_avg = &mut p.state[0];
                    let _ = square_avg
                        .g_mul_scalar_(RMSPROP_ALPHA)
                        .g_add_(&(&grad * &grad * (1.0 - RMSPROP_ALPHA)));
                    let avg = square_avg.sqrt() + EPS;
                    let _ = p.var.g_sub_(&(grad / avg * self.lr));
                }
            }
        }
    }

    /// Writes the state (contiguous, whatever the variables' layout) to `path`, atomically.
    pub fn save(&self, path: &Path) -> Result<()> {
        let _guard = tch::no_grad_guard();
        let mut named = Vec::new();
        for p in &self.params {
            for (kind, t) in self.rule.state_names().iter().zip(&p.state) {
                named.push((format!("{kind}/{}", p.name), t.contiguous()));
            }
            named.push((format!("step/{}", p.name), Tensor::from_slice(&[p.steps])));
        }
        named.push(("steps".into(), Tensor::from_slice(&[self.steps as i64])));
        let tmp = path.with_extension("tmp.safetensors");
        Tensor::write_safetensors(&named, &tmp)?;
        std::fs::rename(&tmp, path).map_err(|e| Error::io(path, e))
    }

    /// Restores the state [`Optimizer::save`] wrote after `steps` steps, for the same
    /// variables and rule; a file for another rule, another network or another step is
    /// refused, and the state is left as it was.
    pub fn load(&mut self, path: &Path, steps: u64) -> Result<()> {
        let _guard = tch::no_grad_guard();
        let mut saved: HashMap<String, Tensor> =
            Tensor::read_safetensors(path)?.into_iter().collect();
        let refuse = |what: String| Error::model(path, format!("optimizer state: {what}"));
        let saved_steps = saved
            .remove("steps")
            .map(|t| t.to_kind(Kind::Int64).int64_value(&[0]));
        if saved_steps != Some(steps as i64) {
            return Err(refuse(format!(
                "saved after {} steps, the checkpoint after {steps}",
                saved_steps.map_or("unknown".into(), |s| s.to_string())
            )));
        }
        let mut restored = Vec::with_capacity(self.params.len());
        for p in &self.params {
            let mut state = Vec::new();
            for (kind, now) in self.rule.state_names().iter().zip(&p.state) {
                let key = format!("{kind}/{}", p.name);
                let t = saved.remove(&key).ok_or_else(|| {
                    refuse(format!(
                        "no `{key}` (saved for another optimizer or network?)"
                    ))
                })?;
                if t.size() != now.size() {
                    return Err(refuse(format!(
                        "`{key}` is {:?}, the variable {:?}",
                        t.size(),
                        now.size()
                    )));
                }
                state.push(t);
            }
            let key = format!("step/{}", p.name);
            let param_steps = saved
                .remove(&key)
                .ok_or_else(|| refuse(format!("no `{key}`")))?
                .to_kind(Kind::Int64)
                .int64_value(&[0]);
            restored.push((state, param_steps));
        }
        if let Some(extra) = saved.keys().next() {
            return Err(refuse(format!(
                "`{extra}` is for no variable of this network"
            )));
        }
        for (p, (state, param_steps)) in self.params.iter_mut().zip(restored) {
            for (now, t) in p.state.iter_mut().zip(state) {
                now.copy_(&t.to_device(now.device()).to_kind(now.kind()));
            }
            p.steps = param_steps;
        }
        self.steps = steps;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tch::nn::OptimizerConfig;
    use tch::Device;

    /// Two variables (one 4-D, as convolution weights are), random, in a new store.
    fn variables() -> VarStore {
        let vs = VarStore::new(Device::Cpu);
        let root = vs.root();
        let _ = root.randn("w", &[3, 2, 2, 2], 0.0, 1.0);
        let _ = root.randn("b", &[3], 0.0, 1.0);
        vs
    }

    /// A twin of `vs`: the same variables and values.
    fn twin(vs: &VarStore) -> VarStore {
        let mut copy = variables();
        copy.copy(vs).unwrap();
        copy
    }

    /// A loss with curvature in both variables.
    fn loss(vs: &VarStore, x: &Tensor) -> Tensor {
        let vars = vs.variables();
        let y =
            (&vars["w"] * &x.unsqueeze(1)).sum_dim_intlist(&[2i64, 3, 4][..], false, Kind::Float)
                + &vars["b"];
        (y.tanh() - 0.3).square().sum(Kind::Float)
    }

    fn snapshot(vs: &VarStore) -> Vec<(String, Tensor)> {
        let mut v: Vec<_> = vs
            .variables()
            .into_iter()
            .map(|(n, t)| (n, t.detach().copy()))
            .collect();
        v.sort_by(|a, b| a.0.cmp(&b.0));
        v
    }

    fn max_diff(a: &[(String, Tensor)], b: &[(String, Tensor)]) -> f64 {
        a.iter()
            .zip(b)
            .map(|((_, x), (_, y))| (x - y).abs().max().double_value(&[]))
            .fold(0.0, f64::max)
    }

    /// Rounding apart (RMSProp's first steps are ±10·lr whatever the gradient's size, so a
    /// large lr amplifies rounding differences into chaos; 0.01 stays in the smooth regime).
    #[test]
    fn steps_like_libtorch() {
        let _lock = crate::test_support::torch_rng_lock();
        for rule in [Rule::Adam, Rule::RmsProp] {
            tch::manual_seed(3);
            let ours_vs = variables();
            let theirs_vs = twin(&ours_vs);
            let x = Tensor::randn([4, 2, 2, 2], (Kind::Float, Device::Cpu));
            let start = snapshot(&ours_vs);
            let mut ours = Optimizer::new(rule, &ours_vs, 0.01, 1e-2);
            let mut theirs = match rule {
                Rule::Adam => tch::nn::Adam {
                    wd: 1e-2,
                    ..Default::default()
                }
                .build(&theirs_vs, 0.01)
                .unwrap(),
                Rule::RmsProp => tch::nn::RmsProp {
                    wd: 1e-2,
                    ..Default::default()
                }
                .build(&theirs_vs, 0.01)
                .unwrap(),
            };
            for _ in 0..20 {
                ours.backward_step(&loss(&ours_vs, &x));
                theirs.backward_step(&loss(&theirs_vs, &x));
            }
            let moved = max_diff(&start, &snapshot(&ours_vs));
            let apart = max_diff(&snapshot(&theirs_vs), &snapshot(&ours_vs));
            assert!(
                moved > 0.1,
                "{rule:?}: the variables hardly moved ({moved})"
            );
            assert!(
                apart < 1e-5,
                "{rule:?}: {apart} from libtorch's after 20 steps"
            );
        }
    }

    #[test]
    fn saved_state_continues_the_same_steps() {
        let _lock = crate::test_support::torch_rng_lock();
        for rule in [Rule::Adam, Rule::RmsProp] {
            tch::manual_seed(4);
            let vs = variables();
            let x = Tensor::randn([4, 2, 2, 2], (Kind::Float, Device::Cpu));
            let mut opt = Optimizer::new(rule, &vs, 0.05, 1e-2);
            for _ in 0..5 {
                opt.backward_step(&loss(&vs, &x));
            }
            let dir = tempfile::tempdir().unwrap();
            let path = dir.path().join("optimizer.safetensors");
            opt.save(&path).unwrap();
            let (resumed_vs, fresh_vs) = (twin(&vs), twin(&vs));
            let mut resumed = Optimizer::new(rule, &resumed_vs, 0.05, 1e-2);
            resumed.load(&path, 5).unwrap();
            let mut fresh = Optimizer::new(rule, &fresh_vs, 0.05, 1e-2);
            for _ in 0..5 {
                opt.backward_step(&loss(&vs, &x));
                resumed.backward_step(&loss(&resumed_vs, &x));
                fresh.backward_step(&loss(&fresh_vs, &x));
            }
            assert_eq!(
                max_diff(&snapshot(&vs), &snapshot(&resumed_vs)),
                0.0,
                "{rule:?}"
            );
            // Without the state the same steps land elsewhere (so the check above can fail).
            assert!(
                max_diff(&snapshot(&vs), &snapshot(&fresh_vs)) > 1e-3,
                "{rule:?}"
            );
            // State for the other rule is refused.
            let other = match rule {
                Rule::Adam => Rule::RmsProp,
                Rule::RmsProp => Rule::Adam,
            };
            let err = Optimizer::new(other, &fresh_vs, 0.05, 1e-2)
                .load(&path, 5)
                .unwrap_err()
                .to_string();
            assert!(err.contains("optimizer state"), "{err}");
            // So is state of another step.
            let err = Optimizer::new(rule, &fresh_vs, 0.05, 1e-2)
                .load(&path, 6)
                .unwrap_err()
                .to_string();
            assert!(err.contains("saved after 5 steps"), "{err}");
        }
    }

    /// A finite loss whose gradients are not (√w at w = 0: loss 0, gradient ∞) is not
    /// stepped: the variables, the optimiser's moments and its step count stay as they
    /// were, and the next finite batch steps as the first.
    #[test]
    fn a_finite_loss_with_gradients_not_finite_is_not_stepped() {
        let _lock = crate::test_support::torch_rng_lock();
        for rule in [Rule::Adam, Rule::RmsProp] {
            tch::manual_seed(5);
            let vs = variables();
            let x = Tensor::randn([4, 2, 2, 2], (Kind::Float, Device::Cpu));
            let mut opt = Optimizer::new(rule, &vs, 0.05, 1e-2);
            let before = snapshot(&vs);
            let w = &vs.variables()["w"];
            // One entry of w moved to 0 (in the graph, not the data): √ of it is 0.
            let at_zero = (w - w.detach()).abs().sum(Kind::Float).sqrt();
            assert_eq!(at_zero.double_value(&[]), 0.0);
            let poisoned = loss(&vs, &x) + at_zero;
            assert!(poisoned.double_value(&[]).is_finite());
            assert!(!opt.backward_step(&poisoned), "{rule:?}: stepped");
            assert_eq!(max_diff(&before, &snapshot(&vs)), 0.0, "{rule:?}");
            assert_eq!(opt.steps(), 0, "{rule:?}");
            // The next finite batch steps as a fresh optimiser's first step does.
            let twin_vs = twin(&vs);
            let mut fresh = Optimizer::new(rule, &twin_vs, 0.05, 1e-2);
            assert!(opt.backward_step(&loss(&vs, &x)), "{rule:?}");
            assert!(fresh.backward_step(&loss(&twin_vs, &x)), "{rule:?}");
            assert_eq!(
                max_diff(&snapshot(&vs), &snapshot(&twin_vs)),
                0.0,
                "{rule:?}"
            );
        }
    }
}
