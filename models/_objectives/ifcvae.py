"""IFCVAE (Creswell et al. 2017, IFcVAE-GAN, as disentanglement-pytorch's `ifcvae`): rec + KL +
w_le (the label encoder's cross entropy on x and on the reconstruction) - w_aux (the auxiliary's
cross entropy of the classes from z). The decoder reads the label encoder's prediction; the
auxiliary classifier is an adversary trained by its own Adam."""

from __future__ import annotations

from typing import Any

from models._objectives.cvae import FIELDS as CONDITION_FIELDS
from models._objectives.cvae import KNOBS as CONDITION_KNOBS
from models.spec import Adversary, Knob, ObjectiveSpec, non_negative, positive, role

KNOBS = CONDITION_KNOBS + (
    Knob("ifc_w_le", float, 1.0, "IFCVAE weight of the label encoder's cross entropy.",
         non_negative, ">= 0 and finite"),
    Knob("ifc_w_aux", float, 1.0,
         "IFCVAE weight of the adversarial term (minus the auxiliary's cross entropy of the "
         "labels from z).", non_negative, ">= 0 and finite"),
    Knob("ifc_lr", float, 1e-4,
         "learning rate of the IFCVAE auxiliary classifier's Adam (betas 0.5, 0.9).",
         positive, "> 0"),
)


def _auxiliary(model: Any) -> Any:
    from models._adversary import AuxClassifier

    return AuxClassifier(model.cfg.latent_dim, sum(model.condition_sizes))


def _auxiliary_loss(model: Any, module: Any, out: Any) -> Any:
    from models._adversary import aux_classifier_loss

    if out.labels is None:
        raise RuntimeError("the IFCVAE auxiliary needs the forward's labels")
    return aux_classifier_loss(module, out.z, out.labels, model.condition_sizes)


def build(model: Any, cfg: Any) -> list:
    from models.objectives import IFCTerm, KLTerm

    return [KLTerm(1.0), IFCTerm(cfg.ifc_w_le, cfg.ifc_w_aux, model.condition_sizes,
                                 model.label_encoder, model.adversaries["ifc_aux"])]


SPEC = ObjectiveSpec(
    name="ifcvae", reference="Creswell et al. 2017 (IFcVAE-GAN)",
    summary="rec + KL + w_le CE(label encoder) - w_aux CE(auxiliary on z)", knobs=KNOBS,
    main=role([*CONDITION_FIELDS, "ifc_w_le", "ifc_w_aux", "ifc_lr"], ["ifc_w_le", "ifc_w_aux"],
              ["kld", "ifc_le", "ifc_le_recon", "ifc_aux"]),
    build=build, adversaries=(Adversary("ifc_aux", "ifc_lr", _auxiliary, _auxiliary_loss),),
    conditioning="label_encoder",
)
