// Run in the OHIF page (Selenium execute_script): what the viewer holds for one SEG series.
// arguments[0]: the SEG's SeriesInstanceUID. Returns null until OHIF has loaded it, else the
// segmentation's label and segments (index, label, colour in the viewport) and, per CT slice
// (SOP Instance UID), the voxel count of every label value in the viewer's own label maps.
const seriesUID = arguments[0];
const services = window.services;
const cs = window.cornerstone;
if (!services || !cs) return null;
const { displaySetService, segmentationService, viewportGridService } = services;
const displaySet = displaySetService
  .getActiveDisplaySets()
  .find(ds => ds.SeriesInstanceUID === seriesUID);
if (!displaySet) return null;
const segmentation = segmentationService.getSegmentation(displaySet.displaySetInstanceUID);
if (!segmentation) return { loaded: false, displaySet: displaySet.displaySetInstanceUID };
const viewportId = viewportGridService.getActiveViewportId();
const segments = Object.values(segmentation.segments)
  .filter(Boolean)
  .map(segment => ({
    index: segment.segmentIndex,
    label: segment.label,
    color: Array.from(
      segmentationService.getSegmentColor(viewportId, segmentation.segmentationId, segment.segmentIndex) || []
    ).slice(0, 3),
  }));
const labelmap = segmentation.representationData.Labelmap || {};
const imageIds = labelmap.imageIds || [];
const voxels = {};
for (const imageId of imageIds) {
  const image = cs.cache.getImage(imageId);
  if (!image) continue;
  const sop = cs.metaData.get('generalImageModule', image.referencedImageId)?.sopInstanceUID;
  const counts = voxels[sop] || {};
  for (const value of image.getPixelData()) {
    if (value) counts[value] = (counts[value] || 0) + 1;
  }
  voxels[sop] = counts;
}
return {
  loaded: true,
  displaySet: displaySet.displaySetInstanceUID,
  label: segmentation.label,
  segments,
  labelmapImages: imageIds.length,
  voxels,
};
