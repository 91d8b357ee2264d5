//! The ids G and D are conditioned on, and what each means: the owner of the label space.
//!
//! A conditional run (`model.conditional`) conditions on ids: the data set's classes; or, with
//! `model.clusters_per_class`, each class's k-means clusters (class c's clusters are ids
//! c * clusters_per_class onwards); or, self-conditioned (`data.clusters`), clusters of the
//! unlabelled images. What speaks of classes still speaks of the data set's labels: one grid row
//! per class, `gantry sample --class 7`, the judge's class accuracy. This type says which ids to
//! draw (for training, grids, the judge and `gantry sample`) and which class an id stands for;
//! `model::conditioning` is how the networks take them.

use rand_chacha::ChaCha8Rng;

use crate::config::Config;
use crate::rng;

/// A run's conditions: its ids and, once the training images are grouped, each id's size.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Conditions {
    /// Classes conditioned on (0: unconditional); `data.clusters` in a self-conditioned run.
    classes: usize,
    /// Clusters per class (1: an id is a class).
    per_class: usize,
    /// Self-conditioned: the ids are clusters of unlabelled images, not the data set's classes.
    self_clustered: bool,
    /// Each id's training images when the ids are clusters (drawn in proportion to them).
    sizes: Option<Vec<usize>>,
    /// Running totals of `sizes` (what weighted drawing reads).
    cumulative: Option<Vec<usize>>,
}

impl Conditions {
    /// The conditions `config` describes (no sizes yet).
    pub fn of(config: &Config) -> Self {
        let m = &config.model;
        Self {
            classes: if m.is_conditional() { m.classes } else { 0 },
            per_class: m.clusters_per_class.max(1),
            self_clustered: config.data.clusters > 0,
            sizes: None,
            cumulative: None,
        }
    }

    /// These conditions with each id's size (a clustered run's; None: every id alike).
    pub fn with_sizes(mut self, sizes: Option<Vec<usize>>) -> Self {
        self.cumulative = sizes.as_ref().map(|s| {
            s.iter()
                .scan(0usize, |total, &n| {
                    *total = total.saturating_add(n);
                    Some(*total)
                })
                .collect()
        });
        self.sizes = sizes;
        self
    }

    /// The number of ids (0 when unconditional): the width of the networks' one-hot.
    pub fn ids(&self) -> usize {
        self.classes * self.per_class
    }

    /// The data set's classes a generator can be asked for (0 when unconditional).
    pub fn classes(&self) -> usize {
        self.classes
    }

    /// The class that id `id` stands for.
    pub fn class_of(&self, id: u8) -> u8 {
        class_of(id, self.per_class)
    }

    /// `n` ids for G in training, from `stream`: in proportion to the ids' sizes when they are
    /// clusters, else uniform.
    pub fn draw(&self, stream: &mut ChaCha8Rng, n: usize, out: &mut Vec<u8>) {
        match &self.cumulative {
            Some(totals) => rng::weighted_labels(stream, n, totals, out),
            None => rng::labels(stream, n, self.ids(), out),
        }
    }

    /// The ids of `n` images drawn without a class (the judge's, `gantry sample`'s): in
    /// proportion to the ids' sizes when they are clusters (as G was trained), else every class
    /// in turn (0, 1, ..., 0, 1, ...). Empty when unconditional.
    pub fn spread(&self, n: usize) -> Vec<u8> {
        match (&self.sizes, self.ids()) {
            (_, 0) => Vec::new(),
            (Some(sizes), _) => proportional(sizes, n),
            (None, ids) => (0..n).map(|i| (i % ids) as u8).collect(),
        }
    }

    /// The ids of `n` images of class `class` (below [`Conditions::classes`]): its clusters in
    /// proportion to their sizes (each in turn without sizes), or the class itself.
    pub fn of_class(&self, class: usize, n: usize) -> Vec<u8> {
        let per = self.per_class;
        if per == 1 {
            return vec![class as u8; n];
        }
        match &self.sizes {
            Some(sizes) if sizes.len() >= (class + 1) * per => {
                proportional(&sizes[class * per..(class + 1) * per], n)
                    .into_iter()
                    .map(|j| (class * per + j as usize) as u8)
                    .collect()
            }
            _ => (0..n).map(|i| (class * per + i % per) as u8).collect(),
        }
    }

    /// The data set's class of each id in `ids`, for the judge's class scores; None when
    /// unconditional or self-conditioned (whose ids are clusters, not the data set's classes).
    pub fn judged(&self, ids: &[u8]) -> Option<Vec<u8>> {
        (self.classes > 0 && !self.self_clustered).then(|| ids.iter().map(|&id| self.class_of(id)).collect())
    }

    /// The ids of a `rows` x `cols` grid's tiles, row by row: row r shows class r (with
    /// clusters per class, its clusters along the row: each in turn, column i cluster i mod
    /// clusters_per_class, or, where the columns are fewer than the clusters, spread evenly over
    /// them: column i cluster i * clusters_per_class / columns); in a self-conditioned run, whose
    /// rows may be fewer than its clusters, clusters spread evenly over them (row r: cluster
    /// r * clusters / rows). Empty when unconditional.
    pub fn grid(&self, rows: usize, cols: usize) -> Vec<u8> {
        if self.classes == 0 {
            return Vec::new();
        }
        let (classes, per_class, shown) = (self.classes, self.per_class, rows.max(1));
        (0..rows)
            .flat_map(|r| {
                (0..cols).map(move |col| {
                    let id = if per_class > 1 {
                        r * per_class
                            + if cols >= per_class { col % per_class } else { col * per_class / cols }
                    } else {
                        (r * classes / shown).min(classes - 1)
                    };
                    id as u8
                })
            })
            .collect()
    }
}

/// `n` ids in proportion to `sizes` (largest remainders; ties to the lower id), id by id: what
/// the judge and `gantry sample` ask a clustered G for, so that its samples are spread over the
/// clusters as the training images are.
pub fn proportional(sizes: &[usize], n: usize) -> Vec<u8> {
    // In u128: sizes can come from a run's run.json, and s * n must not overflow.
    let total: u128 = sizes.iter().map(|&s| s as u128).sum();
    if total == 0 {
        return Vec::new();
    }
    let share = |c: usize| sizes[c] as u128 * n as u128;
    let mut counts: Vec<usize> = (0..sizes.len()).map(|c| (share(c) / total) as usize).collect();
    let mut rest: Vec<usize> = (0..sizes.len()).collect();
    // Remainder s * n mod total, largest first; a stable sort keeps ties in id order.
    rest.sort_by_key(|&c| std::cmp::Reverse(share(c) % total));
    let short = n - counts.iter().sum::<usize>();
    for &c in rest.iter().take(short) {
        counts[c] += 1;
    }
    counts.iter().enumerate().flat_map(|(c, &m)| std::iter::repeat_n(c as u8, m)).collect()
}

/// The class of (class, cluster) id `id` when each class is split into `per_class` clusters
/// (`model.clusters_per_class`; 1 or 0: the id is the class).
fn class_of(id: u8, per_class: usize) -> u8 {
    (id as usize / per_class.max(1)) as u8
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Conditioning;

    fn sizes(labels: &[u8], k: usize) -> Vec<usize> {
        let mut sizes = vec![0usize; k];
        for &l in labels {
            sizes[l as usize] += 1;
        }
        sizes
    }

    #[test]
    fn proportional_ids_follow_the_sizes_and_sum_to_n() {
        assert_eq!(proportional(&[1, 1], 4), vec![0, 0, 1, 1]);
        assert_eq!(proportional(&[3, 1], 4), vec![0, 0, 0, 1]);
        // 10 * (5, 3, 2) / 10 exactly; then 7 of them: 3.5, 2.1, 1.4 -> 3 + 1 (largest
        // remainder, id 0), 2, 1.
        assert_eq!(proportional(&[5, 3, 2], 10), vec![0, 0, 0, 0, 0, 1, 1, 1, 2, 2]);
        assert_eq!(sizes(&proportional(&[5, 3, 2], 7), 3), vec![4, 2, 1]);
        assert_eq!(proportional(&[780, 1910, 1000], 10_000).len(), 10_000);
        assert!(proportional(&[0, 0], 3).is_empty());
        // Sizes from a hostile run.json: no overflow.
        assert_eq!(proportional(&[usize::MAX, usize::MAX], 4), vec![0, 0, 1, 1]);
    }

    fn conditional(per_class: usize) -> Config {
        let mut config = Config::default();
        config.model.conditional = Conditioning::Projection;
        config.model.clusters_per_class = per_class;
        config
    }

    /// Ten classes of three clusters: 30 ids; class 7's ids are 21-23, drawn by their sizes; the
    /// judge reads ids as their classes.
    #[test]
    fn clusters_within_classes_are_ids_of_their_class() {
        let id_sizes: Vec<usize> = (0..30).map(|i| if i % 3 == 0 { 2 } else { 1 }).collect();
        let c = Conditions::of(&conditional(3)).with_sizes(Some(id_sizes));
        assert_eq!((c.ids(), c.classes()), (30, 10));
        assert_eq!(c.of_class(7, 4), vec![21, 21, 22, 23]);
        // Without sizes (the bug: class 7's ids were asked as id 7, another class's cluster).
        assert_eq!(Conditions::of(&conditional(3)).of_class(7, 4), vec![21, 22, 23, 21]);
        assert_eq!(c.judged(&[0, 2, 3, 29]), Some(vec![0, 0, 1, 9]));
        assert_eq!(c.spread(30).len(), 30);
        let mut stream = crate::rng::Streams::new(3).labels;
        let mut drawn = Vec::new();
        c.draw(&mut stream, 4000, &mut drawn);
        let counts = sizes(&drawn, 30);
        assert!(counts[0] > counts[1] + counts[1] / 2, "{counts:?}");
    }

    #[test]
    fn unconditional_runs_have_no_ids_and_self_conditioned_ones_no_classes_to_judge() {
        let c = Conditions::of(&Config::default());
        assert_eq!((c.ids(), c.spread(5), c.grid(2, 3), c.judged(&[])), (0, vec![], vec![], None));
        let mut clustered = conditional(0);
        clustered.data.clusters = 20;
        clustered.model.classes = 20;
        let c = Conditions::of(&clustered);
        assert_eq!(c.judged(&[3]), None);
        assert_eq!(c.spread(4), vec![0, 1, 2, 3]);
        // Five rows over 20 clusters: every fourth.
        assert_eq!(c.grid(5, 2), vec![0, 0, 4, 4, 8, 8, 12, 12, 16, 16]);
    }

    /// Row r of a clusters-within-classes grid shows class r's clusters: each in turn where
    /// the columns are enough, spread evenly over them where not.
    #[test]
    fn grid_rows_show_a_class_and_its_clusters_spread_over_the_columns() {
        let five = Conditions::of(&conditional(10)).grid(10, 5);
        assert_eq!(&five[..5], &[0, 2, 4, 6, 8]);
        assert_eq!(&five[35..40], &[70, 72, 74, 76, 78]);
        let ten = Conditions::of(&conditional(10)).grid(10, 10);
        assert_eq!(ten, (0..100).collect::<Vec<u8>>());
        assert_eq!(&Conditions::of(&conditional(3)).grid(10, 5)[5..10], &[3, 4, 5, 3, 4]);
    }
}
