// Reads a DICOM-SEG or SR the way OHIF 3.13 does, with the same libraries (dcmjs 0.52.0,
// @cornerstonejs/adapters 5.6.8 over @cornerstonejs/core), and prints what came out as JSON
// for tests/viewer. Usage:
//   node read_dicom.mjs seg <seg.dcm> <ct file>...   segments, labels, voxels per source slice
//   node read_dicom.mjs sr <sr.dcm>                  TID 1500 measurement groups and numbers
//   node read_dicom.mjs jobs <jobs.json>             [{kind, path, ct: [...]}, ...] in one run
//                                                    (node and its imports start once)
import { readFileSync } from 'node:fs';
import * as csCore from '@cornerstonejs/core';
import { adaptersSEG, adaptersSR } from '@cornerstonejs/adapters';
import dcmjs from 'dcmjs';

const { DicomMessage, DicomMetaDictionary } = dcmjs.data;

function versions() {
  const of = name =>
    JSON.parse(readFileSync(new URL(`node_modules/${name}/package.json`, import.meta.url))).version;
  return {
    dcmjs: of('dcmjs'),
    '@cornerstonejs/adapters': of('@cornerstonejs/adapters'),
    '@cornerstonejs/core': of('@cornerstonejs/core'),
    node: process.versions.node,
  };
}

function naturalize(path) {
  const bytes = readFileSync(path);
  const buffer = bytes.buffer.slice(bytes.byteOffset, bytes.byteOffset + bytes.byteLength);
  const file = DicomMessage.readFile(buffer);
  const dataset = DicomMetaDictionary.naturalizeDataset(file.dict);
  dataset._meta = DicomMetaDictionary.namifyDataset(file.meta);
  return { buffer, dataset };
}

const asArray = value => (value === undefined ? [] : Array.isArray(value) ? value : [value]);
const first = value => asArray(value)[0];

// The metadata OHIF's DICOMweb data source would hold for each CT slice, keyed by imageId.
function ctMetadataProvider(ctFiles) {
  const modules = new Map();
  const imageIds = [];
  for (const path of ctFiles) {
    const { dataset: ct } = naturalize(path);
    const imageId = `pulmoseg-ct:${ct.SOPInstanceUID}`;
    const iop = ct.ImageOrientationPatient.map(Number);
    const spacing = ct.PixelSpacing.map(Number);
    modules.set(imageId, {
      instance: ct,
      imagePlaneModule: {
        frameOfReferenceUID: ct.FrameOfReferenceUID,
        rows: ct.Rows,
        columns: ct.Columns,
        imageOrientationPatient: iop,
        rowCosines: iop.slice(0, 3),
        columnCosines: iop.slice(3, 6),
        imagePositionPatient: ct.ImagePositionPatient.map(Number),
        sliceThickness: Number(ct.SliceThickness),
        pixelSpacing: spacing,
        rowPixelSpacing: spacing[0],
        columnPixelSpacing: spacing[1],
      },
      generalSeriesModule: { seriesInstanceUID: ct.SeriesInstanceUID, modality: ct.Modality },
      generalImageModule: { sopInstanceUID: ct.SOPInstanceUID, instanceNumber: ct.InstanceNumber },
      imagePixelModule: {
        samplesPerPixel: 1,
        photometricInterpretation: ct.PhotometricInterpretation,
        rows: ct.Rows,
        columns: ct.Columns,
        bitsAllocated: ct.BitsAllocated,
        bitsStored: ct.BitsStored,
        highBit: ct.HighBit,
        pixelRepresentation: ct.PixelRepresentation,
      },
    });
    imageIds.push({ imageId, z: ct.ImagePositionPatient.map(Number)[2] });
  }
  imageIds.sort((a, b) => a.z - b.z);
  const provider = {
    get: (type, imageId) => modules.get(imageId)?.[type],
    add: (imageId, type, value) => {
      const entry = modules.get(imageId) ?? {};
      entry[type] = value;
      modules.set(imageId, entry);
    },
  };
  return { provider, imageIds: imageIds.map(i => i.imageId) };
}

async function readSeg(segPath, ctFiles) {
  const { buffer, dataset } = naturalize(segPath);
  const { provider, imageIds } = ctMetadataProvider(ctFiles);
  csCore.metaData.addProvider((type, imageId) => provider.get(type, imageId), 10000);
  csCore.cache.purgeCache();
  const result = await adaptersSEG.Cornerstone3D.Segmentation.createFromDICOMSegBuffer(
    imageIds,
    buffer,
    { metadataProvider: provider }
  );
  // One label map per group of non-overlapping segments (several when segments overlap), one
  // image per referenced CT slice; the value at a pixel is the segment number.
  const groups = result.labelMapImages.map(images =>
    images.map((image, index) => {
      const counts = {};
      for (const value of image.getPixelData()) {
        if (value) counts[value] = (counts[value] ?? 0) + 1;
      }
      return { sopInstanceUID: provider.get('generalImageModule', imageIds[index]).sopInstanceUID, counts };
    })
  );
  const voxelsBySegment = {};
  for (const group of groups) {
    for (const { sopInstanceUID, counts } of group) {
      for (const [segment, count] of Object.entries(counts)) {
        voxelsBySegment[segment] ??= {};
        voxelsBySegment[segment][sopInstanceUID] =
          (voxelsBySegment[segment][sopInstanceUID] ?? 0) + count;
      }
    }
  }
  const segments = {};
  for (const [number, item] of Object.entries(result.segMetadata.data)) {
    if (!item) continue;
    const lab = asArray(item.RecommendedDisplayCIELabValue).map(Number);
    segments[number] = {
      label: item.SegmentLabel,
      propertyType: first(item.SegmentedPropertyTypeCodeSequence)?.CodeValue,
      algorithmType: item.SegmentAlgorithmType,
      rgb: lab.length === 3 ? dcmjs.data.Colors.dicomlab2RGB(lab).map(v => Math.round(v * 255)) : null,
    };
  }
  return {
    versions: versions(),
    sopClassUID: dataset.SOPClassUID,
    transferSyntaxUID: dataset._meta.TransferSyntaxUID?.Value?.[0],
    segmentationType: dataset.SegmentationType,
    numberOfFrames: Number(dataset.NumberOfFrames),
    labelMapGroups: groups.length,
    overlappingSegments: Boolean(result.overlappingSegments),
    segments,
    voxelsBySegment,
  };
}

function codeMeaning(item) {
  return first(item.ConceptNameCodeSequence)?.CodeMeaning;
}

function readSr(srPath) {
  const { dataset } = naturalize(srPath);
  const template = first(dataset.ContentTemplateSequence)?.TemplateIdentifier;
  const imaging = asArray(dataset.ContentSequence).find(i => codeMeaning(i) === 'Imaging Measurements');
  const groups = asArray(imaging?.ContentSequence)
    .filter(i => codeMeaning(i) === 'Measurement Group')
    .map(group => {
      const items = asArray(group.ContentSequence);
      const tracking = items.find(i => codeMeaning(i) === 'Tracking Identifier')?.TextValue;
      const segment = items.find(i => i.ValueType === 'IMAGE' && first(i.ReferencedSOPSequence)?.ReferencedSegmentNumber !== undefined);
      const measurements = items
        .filter(i => i.ValueType === 'NUM')
        .map(i => {
          const value = first(i.MeasuredValueSequence);
          return {
            name: codeMeaning(i),
            value: Number(value?.NumericValue),
            unit: first(value?.MeasurementUnitsCodeSequence)?.CodeValue,
          };
        });
      return {
        trackingIdentifier: tracking,
        referencedSegment: segment ? Number(first(segment.ReferencedSOPSequence).ReferencedSegmentNumber) : null,
        measurements,
      };
    });
  // What Cornerstone3D's SR adapter (OHIF's hydration path) makes of it: planar tool states only.
  let toolState;
  try {
    toolState = adaptersSR.Cornerstone3D.MeasurementReport.generateToolState(dataset, {}, csCore.metaData);
  } catch (error) {
    toolState = { error: String(error.message ?? error) };
  }
  return {
    versions: versions(),
    sopClassUID: dataset.SOPClassUID,
    template,
    groups,
    cornerstoneToolTypes: Object.keys(toolState).filter(k => k !== 'error'),
    cornerstoneError: toolState.error ?? null,
  };
}

async function main() {
  const [kind, path, ...rest] = process.argv.slice(2);
  let result;
  if (kind === 'seg' && path && rest.length) {
    result = await readSeg(path, rest);
  } else if (kind === 'sr' && path) {
    result = readSr(path);
  } else if (kind === 'jobs' && path) {
    result = [];
    for (const job of JSON.parse(readFileSync(path, 'utf8'))) {
      result.push(job.kind === 'seg' ? await readSeg(job.path, job.ct) : readSr(job.path));
    }
  } else {
    process.stderr.write('usage: node read_dicom.mjs seg <seg.dcm> <ct file>... | sr <sr.dcm> | jobs <jobs.json>\n');
    process.exit(2);
  }
  process.stdout.write(JSON.stringify(result));
}

// Library logging goes to stderr so that stdout is the JSON alone.
console.log = (...args) => process.stderr.write(args.map(String).join(' ') + '\n');
main().catch(error => {
  process.stderr.write(`${error.stack ?? error}\n`);
  process.exit(1);
});
