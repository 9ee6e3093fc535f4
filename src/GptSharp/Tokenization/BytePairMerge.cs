namespace GptSharp.Tokenization;

/// <summary>
/// Byte-pair merging of one pre-tokenized piece, with tiktoken's rule: start from single bytes and, while
/// some pair of neighbouring parts concatenates to a token, merge the pair whose concatenation has the lowest
/// rank (the leftmost such pair on a tie). Ranks are token ids, so for GPT-2 this is the original merge order.
/// </summary>
internal static class BytePairMerge
{
    private const int NoRank = int.MaxValue;

    /// <summary>Pieces up to this length merge with a linear scan per merge; longer ones use a heap.</summary>
    public const int LinearLimit = 128;

    /// <summary>Appends the ids of <paramref name="piece"/> (at least 2 bytes, not itself a token) to <paramref name="ids"/>.</summary>
    public static void Encode(Gpt2Vocabulary vocabulary, ReadOnlySpan<byte> piece, ref IdList ids)
    {
        if (piece.Length <= LinearLimit) EncodeLinear(vocabulary, piece, ref ids);
        else EncodeHeap(vocabulary, piece, ref ids);
    }

    /// <summary>Rank of <paramref name="piece"/>[from..to) as one token, or <see cref="NoRank"/>.</summary>
    private static int RankOf(Gpt2Vocabulary vocabulary, ReadOnlySpan<byte> piece, int from, int to)
    {
        if (to - from > vocabulary.MaxTokenLength) return NoRank;
        var bytes = piece[from..to];
        int rank = vocabulary.Rank(bytes, ByteHash.Hash(bytes));
        return rank < 0 ? NoRank : rank;
    }

    /// <summary>
    /// tiktoken's <c>_byte_pair_merge</c>: parts are kept as their start offsets; <c>rank[i]</c> is the rank of
    /// parts i and i+1 joined. Each merge scans for the minimum and recomputes the two ranks next to it.
    /// </summary>
    internal static void EncodeLinear(Gpt2Vocabulary vocabulary, ReadOnlySpan<byte> piece, ref IdList ids)
    {
        int n = piece.Length;
        Span<int> start = stackalloc int[n + 1];
        Span<int> rank = stackalloc int[n + 1];
        for (int i = 0; i <= n; i++) start[i] = i;
        for (int i = 0; i <= n; i++) rank[i] = i < n - 1 ? RankOf(vocabulary, piece, i, i + 2) : NoRank;
        int parts = n; // start[0..parts] are the boundaries (parts + 1 of them)

        while (parts > 1)
        {
            int best = NoRank, at = -1;
            for (int i = 0; i < parts - 1; i++)
            {
                if (rank[i] < best)
                {
                    best = rank[i];
                    at = i;
                }
            }
            if (at < 0) break;

            // Parts at and at + 1 become one: drop boundary at + 1.
            start.Slice(at + 2, parts - at - 1).CopyTo(start.Slice(at + 1));
            rank.Slice(at + 2, parts - at - 2).CopyTo(rank.Slice(at + 1));
            parts--;
            rank[at] = at + 1 < parts ? RankOf(vocabulary, piece, start[at], start[at + 2]) : NoRank;
            if (at > 0) rank[at - 1] = RankOf(vocabulary, piece, start[at - 1], start[at + 1]);
        }

        for (int i = 0; i < parts; i++)
            ids.Add(vocabulary.Rank(piece[start[i]..start[i + 1]], ByteHash.Hash(piece[start[i]..start[i + 1]])));
    }

    /// <summary>
    /// The same merges in O(n log n) for long pieces (e.g. 10,000 repeated letters): parts form a linked list
    /// and candidate pairs wait in a heap ordered by (rank, start), which picks the same pair as the scan
    /// (lowest rank, then leftmost). Entries made stale by a merge are skipped when popped.
    /// </summary>
    internal static void EncodeHeap(Gpt2Vocabulary vocabulary, ReadOnlySpan<byte> piece, ref IdList ids)
    {
        int n = piece.Length;
        var next = new int[n];   // start of the next part (n after the last), for a part starting here
        var prev = new int[n];   // start of the previous part (-1 for the first)
        var rank = new int[n];   // rank of this part joined with the next one
        var alive = new bool[n];
        var heap = new PriorityQueue<int, long>(n);
        for (int i = 0; i < n; i++)
        {
            next[i] = i + 1;
            prev[i] = i - 1;
            alive[i] = true;
            rank[i] = i + 1 < n ? RankOf(vocabulary, piece, i, i + 2) : NoRank;
            if (rank[i] != NoRank) heap.Enqueue(i, Key(rank[i], i));
        }

        while (heap.TryDequeue(out int at, out long key))
        {
            if (!alive[at] || Key(rank[at], at) != key) continue; // stale
            int right = next[at];
            alive[right] = false;
            next[at] = next[right];
            if (next[at] < n) prev[next[at]] = at;

            rank[at] = next[at] < n ? RankOf(vocabulary, piece, at, next[next[at]]) : NoRank;
            if (rank[at] != NoRank) heap.Enqueue(at, Key(rank[at], at));
            int left = prev[at];
            if (left >= 0)
            {
                rank[left] = RankOf(vocabulary, piece, left, next[at]);
                if (rank[left] != NoRank) heap.Enqueue(left, Key(rank[left], left));
            }
        }

        for (int i = 0; i < n; i = next[i])
            ids.Add(vocabulary.Rank(piece[i..next[i]], ByteHash.Hash(piece[i..next[i]])));
    }

    private static long Key(int rank, int start) => ((long)rank << 32) | (uint)start;
}
