"""Metrics of the benchmark (design section 5).

* Generation: :func:`generation_metrics` (FID, KID, precision/recall, IS through torch-fidelity,
  with the offline domain feature extractor by default or user-supplied Inception weights),
  :func:`gaussian_baseline` (the trivially bad generator); the real-data floor is
  ``generation_metrics(train_images, test_images, ...)``.
* Domain feature extractor: :func:`train_domain_extractor`, :func:`load_domain_classifier`,
  :class:`DomainClassifier`, :class:`DomainFeatureExtractor` (registered with torch-fidelity as
  ``"mtdiff-domain"`` on import of this package).
* Tasks: :func:`classification_metrics`, :func:`segmentation_metrics` (scikit-learn).
* Records: :class:`MetricRecord`, :func:`append_records`, :func:`read_records`,
  :func:`records_to_csv`.
"""

from mtdiff.lazy import lazy_attributes

# Lazy imports (PEP 562): torch-fidelity and torchvision cost seconds to import, and records /
# task metrics (the report, the notebook) need neither. The domain extractor is registered with
# torch-fidelity when mtdiff.metrics.extractor is first imported.
_SUBMODULES = {
    "extractor": ("DOMAIN_EXTRACTOR_NAME", "DomainClassifier", "DomainFeatureExtractor", "evaluate_accuracy",
                  "load_domain_classifier", "register_domain_extractor", "save_domain_classifier",
                  "train_domain_extractor"),
    "fidelity": ("INCEPTION_WEIGHTS_FILE", "INCEPTION_WEIGHTS_URL", "ChecksumError", "file_sha256",
                 "gaussian_baseline", "generation_metrics", "reference_cache_files", "to_uint8_images"),
    "records": ("PROTOCOL_FIELDS", "MetricRecord", "RecordError", "append_records", "iter_records", "read_records",
                "records_to_csv", "records_to_frame"),
    "task": ("classification_metrics", "segmentation_metrics"),
}
__getattr__, __dir__ = lazy_attributes(__name__, _SUBMODULES)

__all__ = [
    "DOMAIN_EXTRACTOR_NAME",
    "DomainClassifier",
    "DomainFeatureExtractor",
    "evaluate_accuracy",
    "load_domain_classifier",
    "register_domain_extractor",
    "save_domain_classifier",
    "train_domain_extractor",
    "INCEPTION_WEIGHTS_FILE",
    "INCEPTION_WEIGHTS_URL",
    "ChecksumError",
    "file_sha256",
    "gaussian_baseline",
    "generation_metrics",
    "limit_threads",
    "reference_cache_files",
    "to_uint8_images",
    "PROTOCOL_FIELDS",
    "MetricRecord",
    "RecordError",
    "append_records",
    "iter_records",
    "read_records",
    "records_to_csv",
    "records_to_frame",
    "classification_metrics",
    "segmentation_metrics",
]
