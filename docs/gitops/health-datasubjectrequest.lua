-- Argo CD health of a mixpaneldsr.io DataSubjectRequest (docs/gitops.md).
-- Healthy: every id confirmed done (Ready True) for the current generation.
-- Degraded: Stalled (a person must act), Failed or Cancelled. Suspended: a dry run, or an
-- erasure waiting for a second person's approval.
-- Progressing: anything else (not yet seen, queued, submitted, in progress).
local hs = { status = "Progressing", message = "Waiting for the operator" }
if obj.status == nil then
  return hs
end
local conditions = {}
if obj.status.conditions ~= nil then
  for _, condition in ipairs(obj.status.conditions) do
    conditions[condition.type] = condition
  end
end
local generation = obj.metadata.generation
local observed = obj.status.observedGeneration
if generation ~= nil and (observed == nil or observed < generation) then
  hs.message = "Waiting for the operator to observe generation " .. tostring(generation)
  return hs
end
local ready = conditions["Ready"]
local stalled = conditions["Stalled"]
if stalled ~= nil and stalled.status == "True" then
  hs.status = "Degraded"
  hs.message = stalled.reason .. ": " .. stalled.message
  return hs
end
if ready ~= nil and ready.status == "True" then
  hs.status = "Healthy"
  hs.message = ready.message
  return hs
end
local phase = obj.status.phase
if phase == "Failed" or phase == "Cancelled" then
  hs.status = "Degraded"
  if ready ~= nil then
    hs.message = ready.reason .. ": " .. ready.message
  else
    hs.message = phase
  end
  return hs
end
if ready ~= nil and (ready.reason == "DryRun" or ready.reason == "AwaitingApproval") then
  hs.status = "Suspended"
  hs.message = ready.message
  return hs
end
local reconciling = conditions["Reconciling"]
if reconciling ~= nil and reconciling.status == "True" then
  hs.message = reconciling.reason .. ": " .. reconciling.message
elseif ready ~= nil then
  hs.message = ready.reason .. ": " .. ready.message
end
local risk = conditions["DeadlineAtRisk"]
if risk ~= nil and risk.status == "True" then
  hs.message = hs.message .. " (" .. risk.message .. ")"
end
return hs
