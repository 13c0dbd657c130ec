//! L-BFGS, ported from torch.optim.LBFGS (itself from Torch7's optim package), with
//! its optional strong-Wolfe line search. tch has no L-BFGS of its own.
//!
//! Scalars (step sizes, dot products, curvature) are f64 on the host, as torch's
//! implementation turns them into Python floats; vectors stay tensors on the device.

use std::collections::VecDeque;

use pastiche_spec::LineSearch;
use tch::{Device, Tensor};

use super::{check_tensor, count, Objective, Optimizer};
use crate::checkpoint::{HostTensor, OptimizerState};
use crate::error::Result;

#[derive(Debug, Clone)]
pub struct LbfgsConfig {
    pub lr: f64,
    /// Iterations per `step` call (torch's `max_iter`). Renders use 1, so that
    /// the pixels can be clamped between iterations.
    pub max_iter: usize,
    /// Objective evaluations per `step`, line search included (torch's `max_eval`).
    pub max_eval: usize,
    pub tolerance_grad: f64,
    pub tolerance_change: f64,
    pub history_size: usize,
    pub line_search: LineSearch,
}

impl Default for LbfgsConfig {
    fn default() -> Self {
        LbfgsConfig {
            lr: 1.0,
            max_iter: 1,
            // torch derives max_eval = max_iter * 5 / 4, which for one iteration
            // would leave the line search no evaluations at all; 1 + 25 gives it
            // the 25 that torch's _strong_wolfe allows by default.
            max_eval: 26,
            tolerance_grad: 1e-7,
            tolerance_change: 1e-9,
            history_size: 100,
            line_search: LineSearch::None,
        }
    }
}

/// What persists between steps (torch keeps the same in `optimizer.state`).
#[derive(Default)]
struct State {
    n_iter: u64,
    func_evals: u64,
    /// Last search direction and step length.
    direction: Option<Tensor>,
    t: f64,
    /// Curvature pairs (y, s) and 1 / (y . s), oldest first.
    old_dirs: VecDeque<Tensor>,
    old_stps: VecDeque<Tensor>,
    ro: VecDeque<f64>,
    h_diag: f64,
    prev_flat_grad: Option<Tensor>,
    prev_loss: f64,
}

pub struct Lbfgs {
    config: LbfgsConfig,
    state: State,
}

impl Lbfgs {
    pub fn new(config: LbfgsConfig) -> Self {
        Lbfgs {
            config,
            state: State::default(),
        }
    }

    /// Objective evaluations so far, line searches included.
    pub fn func_evals(&self) -> u64 {
        self.state.func_evals
    }
}

fn dot(a: &Tensor, b: &Tensor) -> Result<f64> {
    Ok(a.f_dot(b)?.f_double_value(&[])?)
}

fn max_abs(a: &Tensor) -> Result<f64> {
    Ok(a.f_abs()?.f_max()?.f_double_value(&[])?)
}

fn flat_eval(objective: &mut Objective<'_>, x: &Tensor) -> Result<(f64, Tensor)> {
    let (loss, grad) = objective(x)?;
    Ok((loss, grad.f_reshape([-1])?))
}

/// x += t * d, with `d` flat.
fn add_step(x: &mut Tensor, t: f64, d: &Tensor) -> Result<()> {
    let _ = x.f_add_(&d.f_view_as(x)?.f_mul_scalar(t)?)?;
    Ok(())
}

impl Optimizer for Lbfgs {
    fn step(&mut self, x: &mut Tensor, objective: &mut Objective<'_>) -> Result<f64> {
        let cfg = &self.config;
        let s = &mut self.state;

        let (orig_loss, mut flat_grad) = flat_eval(objective, x)?;
        let mut loss = orig_loss;
        let mut current_evals = 1;
        s.func_evals += 1;
        let mut opt_cond = max_abs(&flat_grad)? <= cfg.tolerance_grad;
        if opt_cond {
            return Ok(orig_loss);
        }

        let mut n_iter = 0;
        while n_iter < cfg.max_iter {
            n_iter += 1;
            s.n_iter += 1;

            // Direction: steepest descent first, then the two-loop recursion.
            let d = if s.n_iter == 1 {
                s.old_dirs.clear();
                s.old_stps.clear();
                s.ro.clear();
                s.h_diag = 1.0;
                flat_grad.f_neg()?
            } else {
                let prev_grad = s.prev_flat_grad.as_ref().expect("set after iteration 1");
                let prev_d = s.direction.as_ref().expect("set after iteration 1");
                let y = flat_grad.f_sub(prev_grad)?;
                let step = prev_d.f_mul_scalar(s.t)?;
                let ys = dot(&y, &step)?;
                if ys > 1e-10 {
                    if s.old_dirs.len() == cfg.history_size {
                        s.old_dirs.pop_front();
                        s.old_stps.pop_front();
                        s.ro.pop_front();
                    }
                    s.h_diag = ys / dot(&y, &y)?;
                    s.old_dirs.push_back(y);
                    s.old_stps.push_back(step);
                    s.ro.push_back(1.0 / ys);
                }
                // The two-loop recursion's coefficients stay on the device, as
                // torch.optim's do: read back, they would cost two transfers
                // per remembered pair and iteration.
                let num_old = s.old_dirs.len();
                let mut al = Vec::with_capacity(num_old);
                let mut q = flat_grad.f_neg()?;
                for i in (0..num_old).rev() {
                    let al_i = s.old_stps[i].f_dot(&q)?.f_mul_scalar(s.ro[i])?;
                    let _ = q.f_sub_(&s.old_dirs[i].f_mul(&al_i)?)?;
                    al.push(al_i);
                }
                al.reverse();
                let mut r = q.f_mul_scalar(s.h_diag)?;
                let pairs = s.old_dirs.iter().zip(&s.old_stps).zip(&s.ro).zip(&al);
                for (((y_i, s_i), ro_i), al_i) in pairs {
                    let be_i = y_i.f_dot(&r)?.f_mul_scalar(*ro_i)?;
                    let _ = r.f_add_(&s_i.f_mul(&al_i.f_sub(&be_i)?)?)?;
                }
                r
            };
            // flat_grad is replaced, never written in place, so sharing it is safe.
            s.prev_flat_grad = Some(flat_grad.shallow_clone());
            s.prev_loss = loss;

            // Step length: a cautious first step, then lr.
            let mut t = if s.n_iter == 1 {
                (1.0 / flat_grad.f_abs()?.f_sum(None)?.f_double_value(&[])?).min(1.0) * cfg.lr
            } else {
                cfg.lr
            };
            let gtd = dot(&flat_grad, &d)?;
            s.direction = Some(d.shallow_clone());
            s.t = t;
            if gtd > -cfg.tolerance_change {
                break;
            }

            let mut ls_func_evals = 0;
            match cfg.line_search {
                LineSearch::StrongWolfe => {
                    let x_init = x.copy();
                    let mut along = |t: f64| -> Result<(f64, Tensor)> {
                        add_step(x, t, &d)?;
                        let evaluated = flat_eval(objective, x);
                        x.f_copy_(&x_init)?;
                        evaluated
                    };
                    let found = strong_wolfe(
                        &mut along,
                        t,
                        &d,
                        loss,
                        &flat_grad,
                        gtd,
                        cfg.tolerance_change,
                        cfg.max_eval.saturating_sub(current_evals),
                    )?;
                    (loss, flat_grad, t, ls_func_evals) = found;
                    add_step(x, t, &d)?;
                    opt_cond = max_abs(&flat_grad)? <= cfg.tolerance_grad;
                }
                LineSearch::None => {
                    add_step(x, t, &d)?;
                    if n_iter != cfg.max_iter {
                        (loss, flat_grad) = flat_eval(objective, x)?;
                        opt_cond = max_abs(&flat_grad)? <= cfg.tolerance_grad;
                        ls_func_evals = 1;
                    }
                }
            }
            s.t = t;
            current_evals += ls_func_evals;
            s.func_evals += ls_func_evals as u64;

            if n_iter == cfg.max_iter
                || current_evals >= cfg.max_eval
                || opt_cond
                || max_abs(&d)? * t.abs() <= cfg.tolerance_change
                || (loss - s.prev_loss).abs() < cfg.tolerance_change
            {
                break;
            }
        }
        Ok(orig_loss)
    }

    fn state(&self) -> Result<OptimizerState> {
        let s = &self.state;
        let mut state = OptimizerState::default();
        let numbers = [
            ("n_iter", s.n_iter as f64),
            ("func_evals", s.func_evals as f64),
            ("t", s.t),
            ("h_diag", s.h_diag),
            ("prev_loss", s.prev_loss),
            ("history", s.old_dirs.len() as f64),
        ];
        for (name, value) in numbers {
            state.numbers.insert(name.into(), value);
        }
        for (name, tensor) in [
            ("direction", &s.direction),
            ("prev_flat_grad", &s.prev_flat_grad),
        ] {
            if let Some(tensor) = tensor {
                state.tensors.insert(name.into(), HostTensor::of(tensor)?);
            }
        }
        for (i, ((y, step), ro)) in s.old_dirs.iter().zip(&s.old_stps).zip(&s.ro).enumerate() {
            state
                .tensors
                .insert(history_name("old_dirs", i), HostTensor::of(y)?);
            state
                .tensors
                .insert(history_name("old_stps", i), HostTensor::of(step)?);
            state.numbers.insert(history_name("ro", i), *ro);
        }
        Ok(state)
    }

    fn restore(&mut self, state: &OptimizerState, device: Device) -> Result<()> {
        let number = |name: &str| state.numbers[name];
        let tensor = |name: &str| -> Result<Option<Tensor>> {
            state
                .tensors
                .get(name)
                .map(|t| t.to_tensor(device))
                .transpose()
        };
        let history = number("history") as usize;
        let mut restored = State {
            n_iter: number("n_iter") as u64,
            func_evals: number("func_evals") as u64,
            direction: tensor("direction")?,
            t: number("t"),
            h_diag: number("h_diag"),
            prev_flat_grad: tensor("prev_flat_grad")?,
            prev_loss: number("prev_loss"),
            ..State::default()
        };
        for i in 0..history {
            let pair = |name| tensor(&history_name(name, i)).map(|t| t.expect("checked"));
            restored.old_dirs.push_back(pair("old_dirs")?);
            restored.old_stps.push_back(pair("old_stps")?);
            restored.ro.push_back(number(&history_name("ro", i)));
        }
        self.state = restored;
        Ok(())
    }
}

/// The name of the `i`th (oldest first) entry of a curvature history, padded
/// so that names sort in order.
fn history_name(what: &str, i: usize) -> String {
    format!("{what}.{i:06}")
}

/// See [`super::check_state`]: the counters and scalars, the direction and
/// previous gradient after the first iteration, and `history` curvature pairs
/// (no more than the render keeps).
pub(super) fn check_state(
    state: &OptimizerState,
    numel: i64,
    history_size: usize,
) -> std::result::Result<(), String> {
    let n_iter = count(state, "n_iter")?;
    count(state, "func_evals")?;
    for name in ["t", "h_diag", "prev_loss"] {
        state.number(name)?;
    }
    if n_iter > 0 {
        check_tensor(state, "direction", numel)?;
        check_tensor(state, "prev_flat_grad", numel)?;
    }
    let history = count(state, "history")?;
    if history > history_size as u64 {
        return Err(format!(
            "{history} curvature pairs, more than {history_size}"
        ));
    }
    for i in 0..history as usize {
        check_tensor(state, &history_name("old_dirs", i), numel)?;
        check_tensor(state, &history_name("old_stps", i), numel)?;
        state.number(&history_name("ro", i))?;
    }
    Ok(())
}

/// A point on the search line: step `t`, value `f`, gradient `g`, slope `gtd`.
struct Point {
    t: f64,
    f: f64,
    g: Tensor,
    gtd: f64,
}

impl Clone for Point {
    fn clone(&self) -> Self {
        Point {
            g: self.g.shallow_clone(),
            ..*self
        }
    }
}

/// Minimiser of the cubic through two points with values and slopes, within bounds
/// (torch's `_cubic_interpolate`; Python's min/max argument order kept for NaNs).
fn cubic_interpolate(
    (x1, f1, g1): (f64, f64, f64),
    (x2, f2, g2): (f64, f64, f64),
    bounds: Option<(f64, f64)>,
) -> f64 {
    let (lo, hi) = bounds.unwrap_or(if x1 <= x2 { (x1, x2) } else { (x2, x1) });
    let d1 = g1 + g2 - 3.0 * (f1 - f2) / (x1 - x2);
    let d2_square = d1 * d1 - g1 * g2;
    if d2_square >= 0.0 {
        let d2 = d2_square.sqrt();
        let min_pos = if x1 <= x2 {
            x2 - (x2 - x1) * ((g2 + d2 - d1) / (g2 - g1 + 2.0 * d2))
        } else {
            x1 - (x1 - x2) * ((g1 + d2 - d1) / (g1 - g2 + 2.0 * d2))
        };
        let at_least_lo = if lo > min_pos { lo } else { min_pos };
        if hi < at_least_lo {
            hi
        } else {
            at_least_lo
        }
    } else {
        (lo + hi) / 2.0
    }
}

fn py_max(a: f64, b: f64) -> f64 {
    if b > a {
        b
    } else {
        a
    }
}

fn py_min(a: f64, b: f64) -> f64 {
    if b < a {
        b
    } else {
        a
    }
}

/// torch's `_strong_wolfe`: bracket a step satisfying the strong Wolfe conditions,
/// then zoom in on it. Returns the value, gradient and step found, and how many
/// evaluations it took.
#[allow(clippy::too_many_arguments)]
fn strong_wolfe(
    along: &mut dyn FnMut(f64) -> Result<(f64, Tensor)>,
    mut t: f64,
    d: &Tensor,
    f: f64,
    g: &Tensor,
    gtd: f64,
    tolerance_change: f64,
    max_ls: usize,
) -> Result<(f64, Tensor, f64, usize)> {
    const C1: f64 = 1e-4;
    const C2: f64 = 0.9;
    let d_norm = max_abs(d)?;
    let (mut f_new, mut g_new) = along(t)?;
    let mut ls_func_evals = 1;
    let mut gtd_new = dot(&g_new, d)?;

    let mut prev = Point {
        t: 0.0,
        f,
        g: g.shallow_clone(),
        gtd,
    };
    let mut done = false;
    let mut ls_iter = 0;
    let mut bracket: Vec<Point> = Vec::new();
    while ls_iter < max_ls {
        let new = Point {
            t,
            f: f_new,
            g: g_new.shallow_clone(),
            gtd: gtd_new,
        };
        if f_new > f + C1 * t * gtd || (ls_iter > 1 && f_new >= prev.f) {
            bracket = vec![prev.clone(), new];
            break;
        }
        if gtd_new.abs() <= -C2 * gtd {
            bracket = vec![new];
            done = true;
            break;
        }
        if gtd_new >= 0.0 {
            bracket = vec![prev.clone(), new];
            break;
        }
        // Extrapolate, between 1.01 and 10 times the current step.
        let min_step = t + 0.01 * (t - prev.t);
        let max_step = t * 10.0;
        t = cubic_interpolate(
            (prev.t, prev.f, prev.gtd),
            (t, f_new, gtd_new),
            Some((min_step, max_step)),
        );
        prev = new;
        (f_new, g_new) = along(t)?;
        ls_func_evals += 1;
        gtd_new = dot(&g_new, d)?;
        ls_iter += 1;
    }
    if ls_iter == max_ls {
        bracket = vec![
            Point {
                t: 0.0,
                f,
                g: g.shallow_clone(),
                gtd,
            },
            Point {
                t,
                f: f_new,
                g: g_new,
                gtd: gtd_new,
            },
        ];
    }

    // Zoom: shrink the bracket until a point meets the conditions.
    let last = bracket.len() - 1;
    let (mut low, mut high) = if bracket[0].f <= bracket[last].f {
        (0, 1)
    } else {
        (1, 0)
    };
    let mut insufficient_progress = false;
    while !done && ls_iter < max_ls {
        if (bracket[1].t - bracket[0].t).abs() * d_norm < tolerance_change {
            break;
        }
        let (a, b) = (&bracket[0], &bracket[1]);
        t = cubic_interpolate((a.t, a.f, a.gtd), (b.t, b.f, b.gtd), None);

        // Too close to an end of the bracket twice running (or outside it): move
        // a tenth of the bracket inwards.
        let (b_max, b_min) = (py_max(a.t, b.t), py_min(a.t, b.t));
        let eps = 0.1 * (b_max - b_min);
        if py_min(b_max - t, t - b_min) < eps {
            if insufficient_progress || t >= b_max || t <= b_min {
                t = if (t - b_max).abs() < (t - b_min).abs() {
                    b_max - eps
                } else {
                    b_min + eps
                };
                insufficient_progress = false;
            } else {
                insufficient_progress = true;
            }
        } else {
            insufficient_progress = false;
        }

        let (f_new, g_new) = along(t)?;
        ls_func_evals += 1;
        let gtd_new = dot(&g_new, d)?;
        ls_iter += 1;
        let new = Point {
            t,
            f: f_new,
            g: g_new,
            gtd: gtd_new,
        };

        if f_new > f + C1 * t * gtd || f_new >= bracket[low].f {
            // Armijo fails, or no lower than the lowest point: new high end.
            bracket[high] = new;
            (low, high) = if bracket[0].f <= bracket[1].f {
                (0, 1)
            } else {
                (1, 0)
            };
        } else {
            if gtd_new.abs() <= -C2 * gtd {
                done = true;
            } else if gtd_new * (bracket[high].t - bracket[low].t) >= 0.0 {
                // The old low end becomes the high end.
                bracket[high] = bracket[low].clone();
            }
            bracket[low] = new;
        }
    }

    let best = bracket.swap_remove(low);
    Ok((best.f, best.g, best.t, ls_func_evals))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cubic_interpolation_finds_the_minimum_of_a_cubic() {
        // f(x) = (x - 1)^2 sampled at 0 and 3: the interpolant is exact.
        let f = |x: f64| (x - 1.0) * (x - 1.0);
        let g = |x: f64| 2.0 * (x - 1.0);
        let t = cubic_interpolate((0.0, f(0.0), g(0.0)), (3.0, f(3.0), g(3.0)), None);
        assert!((t - 1.0).abs() < 1e-12, "{t}");
        // Clamped to the bounds given.
        let t = cubic_interpolate(
            (0.0, f(0.0), g(0.0)),
            (3.0, f(3.0), g(3.0)),
            Some((2.0, 5.0)),
        );
        assert_eq!(t, 2.0);
    }
}
