use tch::{Device, Tensor};

use super::{check_tensor, count, Objective, Optimizer};
use crate::checkpoint::{HostTensor, OptimizerState};
use crate::error::Result;

/// Adam as torch.optim.Adam computes it (no weight decay, no AMSGrad).
pub struct Adam {
    lr: f64,
    beta1: f64,
    beta2: f64,
    eps: f64,
    steps: i32,
    /// First and second moment estimates, created at the first step.
    moments: Option<(Tensor, Tensor)>,
}

impl Adam {
    pub fn new(lr: f64) -> Self {
        Adam {
            lr,
            beta1: 0.9,
            beta2: 0.999,
            eps: 1e-8,
            steps: 0,
            moments: None,
        }
    }
}

impl Optimizer for Adam {
    fn step(&mut self, x: &mut Tensor, objective: &mut Objective<'_>) -> Result<f64> {
        let (loss, grad) = objective(x)?;
        let (exp_avg, exp_avg_sq) = match &mut self.moments {
            Some(moments) => moments,
            None => self
                .moments
                .insert((grad.f_zeros_like()?, grad.f_zeros_like()?)),
        };
        self.steps += 1;
        let _ = exp_avg.f_lerp_(&grad, 1.0 - self.beta1)?;
        let _ = exp_avg_sq.f_mul_scalar_(self.beta2)?;
        let _ = exp_avg_sq.f_add_(&grad.f_square()?.f_mul_scalar(1.0 - self.beta2)?)?;

        let bias_correction1 = 1.0 - self.beta1.powi(self.steps);
        let bias_correction2 = 1.0 - self.beta2.powi(self.steps);
        let step_size = self.lr / bias_correction1;
        let denom = exp_avg_sq
            .f_sqrt()?
            .f_div_scalar(bias_correction2.sqrt())?
            .f_add_scalar(self.eps)?;
        let _ = x.f_sub_(&exp_avg.f_div(&denom)?.f_mul_scalar(step_size)?)?;
        Ok(loss)
    }

    fn state(&self) -> Result<OptimizerState> {
        let mut state = OptimizerState::default();
        state.numbers.insert("steps".into(), f64::from(self.steps));
        if let Some((exp_avg, exp_avg_sq)) = &self.moments {
            state
                .tensors
                .insert("exp_avg".into(), HostTensor::of(exp_avg)?);
            state
                .tensors
                .insert("exp_avg_sq".into(), HostTensor::of(exp_avg_sq)?);
        }
        Ok(state)
    }

    fn restore(&mut self, state: &OptimizerState, device: Device) -> Result<()> {
        self.steps = state.numbers["steps"] as i32;
        self.moments = match state.tensors.get("exp_avg") {
            Some(exp_avg) => Some((
                exp_avg.to_tensor(device)?,
                state.tensors["exp_avg_sq"].to_tensor(device)?,
            )),
            None => None,
        };
        Ok(())
    }
}

/// See [`super::check_state`]: the step count, and both moments once a step was made.
pub(super) fn check_state(state: &OptimizerState, numel: i64) -> std::result::Result<(), String> {
    let steps = count(state, "steps")?;
    if steps > i32::MAX as u64 {
        return Err(format!("{steps} steps"));
    }
    if steps > 0 {
        check_tensor(state, "exp_avg", numel)?;
        check_tensor(state, "exp_avg_sq", numel)?;
    }
    Ok(())
}
