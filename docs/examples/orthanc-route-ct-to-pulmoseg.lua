-- Orthanc auto-routing: send every new CT series to pulmoseg once its study is stable.
--
-- Install: add this file to "LuaScripts" in orthanc.json, and register the gateway as a
-- modality named "pulmoseg", e.g. "DicomModalities": { "pulmoseg": ["PULMOSEG", "10.0.0.5", 11112] }.
-- "Stable" means no new instance for "StableAge" seconds (Orthanc's default: 60).
--
-- The SEG that pulmoseg sends back lands in the same study, which makes the study unstable and
-- then stable again: a study that already holds a SEG is therefore not routed a second time
-- (pulmoseg would also recognise the same CT series and skip it).

function OnStableStudy(studyId, tags, metadata)
  local series = ParseJson(RestApiGet('/studies/' .. studyId .. '/series'))
  for _, s in pairs(series) do
    if s['MainDicomTags']['Modality'] == 'SEG' then
      return
    end
  end
  for _, s in pairs(series) do
    if s['MainDicomTags']['Modality'] == 'CT' then
      RestApiPost('/modalities/pulmoseg/store', s['ID'])
    end
  end
end
