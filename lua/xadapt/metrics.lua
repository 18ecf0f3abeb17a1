-- Evaluation metrics by name over predictions and gold labels: accuracy, f1, matthews (mcc),
-- pearson, spearman (task.h's implementations), and which way is better for each.
local xa = require "xadapt"
local U = require "xadapt.util"

local M = {}
local C = xa._metric

local class_metrics = {accuracy = C.accuracy, f1 = C.f1, matthews = C.matthews, mcc = C.matthews}
local number_metrics = {pearson = C.pearson, spearman = C.spearman}

M.names = {"accuracy", "f1", "matthews", "mcc", "pearson", "spearman", "loss"}

-- Higher is better for every metric but the loss.
function M.higher_is_better(name) return name ~= "loss" end

-- M.compute(name, predictions, gold) -> number
function M.compute(name, pred, gold)
  local f = class_metrics[name] or number_metrics[name]
  if not f then
    U.raise("unknown metric '%s' (valid: %s)", tostring(name), table.concat(M.names, ", "))
  end
  if type(pred) ~= "table" or type(gold) ~= "table" then
    U.raise("xa.metrics.compute: predictions and gold must be lists, got %s and %s", type(pred),
            type(gold))
  end
  return f(pred, gold)
end

function M.check(fname, name, kind)
  local ok = name == "loss" or (kind == "classify" and class_metrics[name]) or
             (kind == "regress" and number_metrics[name])
  if not ok then
    local valid = kind == "classify" and "accuracy, f1, matthews, mcc, loss" or
                  kind == "regress" and "pearson, spearman, loss" or "loss"
    U.raise("%s: metric '%s' does not apply to a %s objective (valid: %s)", fname, tostring(name),
            kind, valid)
  end
end

xa.metrics = {
  accuracy = C.accuracy, f1 = C.f1, matthews = C.matthews, pearson = C.pearson,
  spearman = C.spearman, compute = M.compute,
}
return M
