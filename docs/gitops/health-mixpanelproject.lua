-- Argo CD health of a mixpaneldsr.io MixpanelProject or ClusterMixpanelProject
-- (docs/gitops.md). Healthy: Mixpanel accepts the token (Ready True) for the current
-- generation. Degraded: Stalled (Secret missing, token rejected or expired).
-- Progressing: not checked yet.
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
  local expiring = conditions["TokenExpiring"]
  if expiring ~= nil and expiring.status == "True" then
    hs.message = expiring.message
  end
  return hs
end
if ready ~= nil then
  hs.message = ready.reason .. ": " .. ready.message
end
return hs
